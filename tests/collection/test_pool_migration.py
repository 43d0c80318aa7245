"""pycalico.network.pool_migration and playbooks/migrate-pool.yml against the real etcd:
the new pool, the old one disabled (the IPAM assigns from the new one), the report of what
still uses the old pool, deletion refused while used and done once empty, overlaps refused."""

from __future__ import annotations

import ipaddress
import sys

from pycalico.ipam import IPAM, handle_id
from pycalico.model import IPPool, ResourceStore, WorkloadEndpoint, wep_name
from tests.collection.conftest import REPO, snapshot
from tests.collection.test_playbooks import recap

OLD, NEW, NEW_CIDR = "default-ipv4-ippool", "ippool-10-245-0-0-16", "10.245.0.0/16"


def _pod(etcd, node: str, pod: str) -> str:
    """A pod's address from the IPAM and its WorkloadEndpoint, as the CNI plugin writes them."""
    ip = str(IPAM(etcd).auto_assign(handle_id("k8s-pod-network", pod), {"node": node, "pod": pod}, node)[0].ip)
    ResourceStore(etcd).create(WorkloadEndpoint(wep_name(node, "k8s", pod, "eth0"), {
        "node": node, "orchestrator": "k8s", "workload": pod, "pod": pod, "endpoint": "eth0", "containerID": pod,
        "ipNetworks": [f"{ip}/32"], "interfaceName": "cali" + pod[:11]}, namespace="shop"))
    return ip


def _remove_pod(etcd, node: str, pod: str) -> None:
    IPAM(etcd).release_by_handle(handle_id("k8s-pod-network", pod))
    ResourceStore(etcd).delete(WorkloadEndpoint, wep_name(node, "k8s", pod, "eth0"), "shop")


def test_migration_check_real_report_then_delete_when_empty(run_module, etcd):
    store, ipam = ResourceStore(etcd), IPAM(etcd)
    store.create(IPPool(OLD, {"cidr": "10.244.0.0/16", "blockSize": 24, "vxlanMode": "Always", "ipipMode": "Never",
                              "natOutgoing": True}))
    web = _pod(etcd, "worker-01", "web")
    assert ipaddress.ip_address(web) in ipaddress.ip_network("10.244.0.0/16")
    before = snapshot(etcd)

    checked = run_module("pool_migration", check=True, new_cidr=NEW_CIDR)
    assert checked["changed"] is True, checked
    assert checked["diff"]["before"]["new_pool"] == {}
    assert checked["diff"]["after"]["new_pool"]["spec"]["cidr"] == NEW_CIDR
    assert checked["diff"]["after"]["old_pool"]["spec"]["disabled"] is True
    assert snapshot(etcd) == before, "check mode wrote to etcd"

    real = run_module("pool_migration", new_cidr=NEW_CIDR)
    assert real["changed"] is True and real["old_pool_deleted"] is False
    new = store.get(IPPool, NEW)
    assert (new.cidr, new.block_size, new.vxlan_mode, new.ipip_mode, new.nat_outgoing, new.disabled) == (
        NEW_CIDR, 24, "Always", "Never", True, False)
    assert store.get(IPPool, OLD).disabled is True
    assert real["recreate"] == ["shop/web"]
    assert [w["ips"] for w in real["workloads"]] == [[f"{web}/32"]]
    assert "clusterCIDR" in real["follow_up"] and "CLUSTER_CIDR" in real["follow_up"]

    # The node's affine block in the old pool has room, yet new pods get addresses from the new pool.
    shop = _pod(etcd, "worker-01", "shop")
    assert ipaddress.ip_address(shop) in ipaddress.ip_network(NEW_CIDR)

    again = run_module("pool_migration", new_cidr=NEW_CIDR)
    assert again["changed"] is False and again["recreate"] == ["shop/web"]
    refused = run_module("pool_migration", new_cidr=NEW_CIDR, delete_old=True)
    assert refused.get("failed") and "still has 1 allocated address" in refused["msg"], refused
    assert "shop/web" in refused["msg"] and store.get(IPPool, OLD) is not None

    _remove_pod(etcd, "worker-01", "web")  # the pod recreated: it left the old pool
    done = run_module("pool_migration", new_cidr=NEW_CIDR, delete_old=True)
    assert done["changed"] is True and done["old_pool_deleted"] is True and done["old_pool"] == {}
    assert store.get(IPPool, OLD) is None
    assert all(not ipaddress.ip_network(b.cidr).subnet_of(ipaddress.ip_network("10.244.0.0/16"))
               for b in ipam.blocks() if ipam.affinities("worker-01").get(b.cidr))
    final = run_module("pool_migration", new_cidr=NEW_CIDR)
    assert final["changed"] is False and final["old_pool_deleted"] is True


def test_overlaps_and_same_cidr_refused(run_module, etcd):
    store = ResourceStore(etcd)
    store.create(IPPool(OLD, {"cidr": "10.244.0.0/16"}))
    store.create(IPPool("other", {"cidr": "10.250.0.0/16"}))
    before = snapshot(etcd)
    same = run_module("pool_migration", new_cidr="10.244.0.0/16")
    assert same.get("failed") and "new_cidr" in same["msg"] and "other than the old pool's 10.244.0.0/16" in same["msg"]
    overlap = run_module("pool_migration", new_cidr="10.250.128.0/17")
    assert overlap.get("failed") and "overlaps IPPool 'other' (10.250.0.0/16)" in overlap["msg"], overlap
    inside_old = run_module("pool_migration", new_cidr="10.244.0.0/20")
    assert inside_old.get("failed") and f"IPPool {OLD!r}" in inside_old["msg"]
    bad = run_module("pool_migration", new_cidr="10.245.0.1/16")
    assert bad.get("failed") and "'10.245.0.1/16'" in bad["msg"]
    missing = run_module("pool_migration", old_pool="nope", new_cidr="10.246.0.0/16")
    assert missing.get("failed") and "'nope'" in missing["msg"]
    assert snapshot(etcd) == before


def test_playbook_migrates_and_reports(playbook, tmp_path, etcd_cluster, etcd):
    store = ResourceStore(etcd)
    store.create(IPPool(OLD, {"cidr": "172.20.0.0/16", "ipipMode": "Always", "natOutgoing": True}))
    _pod(etcd, "master-01", "api")
    pki = etcd_cluster.pki
    inv = tmp_path / "hosts"
    inv.write_text(f"""
[kube_master]
127.0.0.1 ansible_connection=local k8s_nodename=master-01

[kube_node]

[all:vars]
CLUSTER_CIDR="172.20.0.0/16"
ETCD_ENDPOINTS="{",".join(etcd_cluster.endpoints)}"
cluster_etcd_ca_cert_file={pki.ca}
cluster_etcd_cert_file={pki.client_cert}
cluster_etcd_key_file={pki.client_key}
ansible_python_interpreter={sys.executable}
""")
    base = ["-e", f"pycalico_python={sys.executable}", "-e", "ansible_become=false"]
    pb = REPO / "playbooks" / "migrate-pool.yml"
    proc = playbook(pb, *base, "-e", "NEW_CIDR=172.21.0.0/16", "-e", "NEW_POOL_NAME=pods-b", inventory=inv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "recreate these pods/workloads: shop/api" in proc.stdout
    assert "kube-proxy's clusterCIDR" in proc.stdout
    assert store.get(IPPool, "pods-b").ipip_mode == "Always" and store.get(IPPool, OLD).disabled is True

    refused = playbook(pb, *base, "-e", "NEW_CIDR=172.21.0.0/16", "-e", "NEW_POOL_NAME=pods-b",
                       "-e", "DELETE_OLD=true", inventory=inv)
    assert refused.returncode != 0 and "DELETE_OLD refused" in refused.stdout, refused.stdout

    _remove_pod(etcd, "master-01", "api")
    done = playbook(pb, *base, "-e", "NEW_CIDR=172.21.0.0/16", "-e", "NEW_POOL_NAME=pods-b", inventory=inv)
    assert done.returncode == 0 and recap(done.stdout, "127.0.0.1")["changed"] == 1, done.stdout
    assert store.get(IPPool, OLD) is None and "old pool: deleted" in done.stdout

    missing = playbook(pb, *base, inventory=inv)
    assert missing.returncode != 0 and "NEW_CIDR: invalid value ''" in missing.stdout
