"""The playbooks themselves: preflight refusals before any host is touched, and the
cluster-wide part of network.yml (guard, pool, BGP, route reflectors) run against
the real etcd with the example inventory's kubeasz variables."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from pycalico.model import BGPConfiguration, BGPPeer, ClusterInformation, IPPool, Node, ResourceStore
from tests.collection.conftest import REPO, snapshot

EXAMPLE = REPO / "inventory" / "example" / "hosts"


def recap(stdout: str, host: str) -> dict[str, int]:
    m = re.search(rf"^{re.escape(host)}\s+:\s+(.*)$", stdout, re.M)
    assert m, f"no recap for {host}:\n{stdout}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def assert_only_preflight_ran(stdout: str) -> None:
    """Only the deploy-host play ran; the example hosts (which do not exist) were never contacted."""
    assert re.findall(r"^PLAY \[(.*?)\]", stdout, re.M) == ["Preflight"], stdout
    assert not re.search(r"\[192\.168\.1\.\d+\]", stdout), stdout


@pytest.mark.parametrize("extra,fragments", [
    (["-e", "CALICO_IPV4POOL_VXLAN=Always"], ["CALICO_IPV4POOL_IPIP", "IPIP and VXLAN on one pool"]),
    (["-e", "CLUSTER_CIDR=172.20.0.0/33"], ["CLUSTER_CIDR: invalid value '172.20.0.0/33'"]),
    (["-e", "CALICO_IPV4POOL_CIDR=10.0.0.0/16"], ["CALICO_IPV4POOL_CIDR", "outside CLUSTER_CIDR"]),
    (["-e", "CALICO_NETWORKING_BACKEND=ospf"], ["CALICO_NETWORKING_BACKEND: invalid value 'ospf'"]),
    (["-e", "CALICO_IPV4POOL_IPIP=sometimes"], ["CALICO_IPV4POOL_IPIP: invalid value 'sometimes'"]),
])
def test_network_preflight_fails_before_touching_a_host(playbook, extra, fragments):
    proc = playbook(REPO / "playbooks" / "network.yml", *extra, inventory=EXAMPLE)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    for fragment in fragments:
        assert fragment in out
    assert_only_preflight_ran(proc.stdout)


@pytest.mark.parametrize("pb,extra,fragment", [
    ("add-node.yml", [], "NODE_TO_ADD: invalid value ''"),
    ("add-node.yml", ["-e", "NODE_TO_ADD=192.168.1.77"], "add it to the inventory first"),
    ("del-node.yml", ["-e", "NODE_TO_DEL=worker-01"], "NODE_TO_DEL: invalid value 'worker-01'"),
])
def test_node_playbooks_check_their_target(playbook, pb, extra, fragment):
    proc = playbook(REPO / "playbooks" / pb, *extra, inventory=EXAMPLE)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and fragment in out, out
    assert_only_preflight_ran(proc.stdout)


@pytest.fixture
def local_inventory(tmp_path: Path, etcd_cluster) -> Path:
    pki = etcd_cluster.pki
    inv = tmp_path / "hosts"
    inv.write_text(f"""
[etcd]

[kube_master]
127.0.0.1 ansible_connection=local k8s_nodename=master-01

[kube_node]

[all:vars]
CLUSTER_NAME="testcluster"
CLUSTER_NETWORK="calico"
CLUSTER_CIDR="172.20.0.0/16"
CALICO_NETWORKING_BACKEND="bird"
CALICO_IPV4POOL_IPIP="off"
CALICO_IPV4POOL_BLOCK_SIZE=24
CALICO_RR_ENABLED=true
CALICO_AS_NUMBER=64600
ETCD_ENDPOINTS="{",".join(etcd_cluster.endpoints)}"
cluster_etcd_ca_cert_file={pki.ca}
cluster_etcd_cert_file={pki.client_cert}
cluster_etcd_key_file={pki.client_key}
ansible_python_interpreter={sys.executable}
""")
    return inv


def test_network_cluster_part_check_real_idempotent(playbook, local_inventory, etcd):
    store = ResourceStore(etcd)
    # As the agent registers it (the agents themselves are not started here).
    store.create(Node("master-01", {"bgp": {"ipv4Address": "127.0.0.1/8"}}))
    registered = snapshot(etcd)
    base = ["--tags", "cluster", "-e", f"pycalico_python={sys.executable}", "-e", "ansible_become=false"]
    network = REPO / "playbooks" / "network.yml"

    checked = playbook(network, *base, "--check", "--diff", inventory=local_inventory)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # identity, pool, BGP configuration, the node's RR role, RR peer, mesh off
    assert recap(checked.stdout, "127.0.0.1")["changed"] == 6
    assert '"ipipMode": "Never"' in checked.stdout  # the diff
    assert '"routeReflectorClusterID": "244.0.0.1"' in checked.stdout
    assert snapshot(etcd) == registered, "check mode wrote to etcd"

    real = playbook(network, *base, inventory=local_inventory)
    assert real.returncode == 0, real.stdout + real.stderr
    assert recap(real.stdout, "127.0.0.1")["changed"] == 6
    pool = store.get(IPPool, "default-ipv4-ippool")
    assert (pool.cidr, pool.block_size, pool.ipip_mode, pool.nat_outgoing) == ("172.20.0.0/16", 24, "Never", True)
    conf = store.get(BGPConfiguration, "default")
    assert conf.as_number == 64600 and conf.node_to_node_mesh is False
    assert store.get(BGPPeer, "peer-with-route-reflectors").peer_selector == "route-reflector == 'true'"
    assert store.get(ClusterInformation, "default").cluster_name == "testcluster"
    node = store.get(Node, "master-01")
    assert node.rr_cluster_id == "244.0.0.1" and node.labels == {"route-reflector": "true"}

    again = playbook(network, *base, inventory=local_inventory)
    assert again.returncode == 0 and recap(again.stdout, "127.0.0.1")["changed"] == 0, again.stdout

    # IPIP turned on later (kubeasz #774): the pool is updated in place, nothing else changes.
    uid = pool.metadata["uid"]
    ipip = playbook(network, *base, "-e", "CALICO_IPV4POOL_IPIP=Always", inventory=local_inventory)
    assert ipip.returncode == 0 and recap(ipip.stdout, "127.0.0.1")["changed"] == 1, ipip.stdout
    pool = store.get(IPPool, "default-ipv4-ippool")
    assert pool.ipip_mode == "Always" and pool.metadata["uid"] == uid

    # Route reflectors off: the mesh comes back and the RR peering goes.
    mesh = playbook(network, *base, "-e", "CALICO_IPV4POOL_IPIP=Always", "-e", "CALICO_RR_ENABLED=false",
                    inventory=local_inventory)
    assert mesh.returncode == 0 and recap(mesh.stdout, "127.0.0.1")["changed"] == 3, mesh.stdout
    assert store.get(BGPConfiguration, "default").node_to_node_mesh is True
    assert store.get(BGPPeer, "peer-with-route-reflectors") is None
    node = store.get(Node, "master-01")
    assert node.rr_cluster_id == "" and node.labels == {}

    # The same play pointed at this etcd from another cluster stops at the guard and writes nothing.
    before = snapshot(etcd)
    other = playbook(network, *base, "-e", "CLUSTER_NAME=othercluster", inventory=local_inventory)
    out = other.stdout + other.stderr
    assert other.returncode != 0
    assert "this etcd belongs to cluster 'testcluster', not 'othercluster'" in out
    assert snapshot(etcd) == before


def _del_node_inventory(tmp_path: Path, etcd_cluster) -> tuple[Path, list[str]]:
    """A live master (this host) and a dead worker 10.99.0.2 (ssh to a closed port), and del-node's arguments."""
    pki = etcd_cluster.pki
    inv = tmp_path / "hosts"
    inv.write_text(f"""
[kube_master]
127.0.0.1 ansible_connection=local k8s_nodename=master-01

[kube_node]
10.99.0.2 ansible_host=127.0.0.1 ansible_port=9 ansible_connection=ssh k8s_nodename=worker_02

[all:vars]
CLUSTER_NAME="testcluster"
CLUSTER_CIDR="10.244.0.0/16"
ETCD_ENDPOINTS="{",".join(etcd_cluster.endpoints)}"
cluster_etcd_ca_cert_file={pki.ca}
cluster_etcd_cert_file={pki.client_cert}
cluster_etcd_key_file={pki.client_key}
ansible_python_interpreter={sys.executable}
""")
    args = ["-e", "NODE_TO_DEL=10.99.0.2", "-e", f"pycalico_python={sys.executable}", "-e", "ansible_become=false",
            "-e", "ansible_ssh_common_args='-o ConnectTimeout=2'"]
    return inv, args


def test_del_node_cleans_the_datastore_even_when_the_node_is_gone(playbook, tmp_path, etcd_cluster, etcd):
    """kubeasz's del-node left Calico's Node, blocks and endpoints behind; here a dead node is
    removed from etcd completely while the unreachable host itself is skipped."""
    from pycalico.ipam import IPAM
    from pycalico.model import WorkloadEndpoint
    from tests.collection.test_modules import _node_with_workload

    store = ResourceStore(etcd)
    _node_with_workload(etcd, "worker-02")
    store.create(Node("master-01", {"bgp": {"ipv4Address": "127.0.0.1/8"}}))
    store.create(ClusterInformation("default", {"clusterGUID": "abc", "datastoreReady": True},
                                    metadata={"annotations": {"pycalico.io/cluster-name": "testcluster"}}))
    inv, args = _del_node_inventory(tmp_path, etcd_cluster)
    proc = playbook(REPO / "playbooks" / "del-node.yml", *args, inventory=inv)
    out = proc.stdout + proc.stderr
    assert re.findall(r"^PLAY \[(.*?)\]", proc.stdout, re.M) == [
        "Preflight", "Stop the pycalico services on the node", "Remove the node from the datastore",
        "Clean the node"], out
    assert recap(proc.stdout, "127.0.0.1")["failed"] == 0, out
    assert store.get(Node, "worker-02") is None  # k8s_nodename worker_02 -> worker-02, kubeasz's rule
    assert store.list(WorkloadEndpoint) == []
    assert store.get(BGPPeer, "worker-02-tor") is None
    assert IPAM(etcd).affinities("worker-02") == {}
    assert store.get(Node, "master-01") is not None
    assert '"workload_endpoints": [' in proc.stdout or "workload_endpoints" in proc.stdout


def test_del_node_after_the_node_controller_deletes_nothing_twice(playbook, tmp_path, etcd_cluster, etcd):
    """issue 12 item 3: the Kubernetes node controller removed the Node first (the same
    pycalico.lifecycle.remove_node); del-node.yml then finds nothing, changes nothing and succeeds."""
    from pycalico.ipam import IPAM
    from pycalico.lifecycle import remove_node
    from tests.collection.test_modules import _node_with_workload

    store = ResourceStore(etcd)
    _node_with_workload(etcd, "worker-02")
    store.create(Node("master-01", {"bgp": {"ipv4Address": "127.0.0.1/8"}}))
    store.create(ClusterInformation("default", {"clusterGUID": "abc", "datastoreReady": True},
                                    metadata={"annotations": {"pycalico.io/cluster-name": "testcluster"}}))
    assert remove_node(store, IPAM(etcd), "worker-02").node_exists  # what the controller does
    before = snapshot(etcd)
    inv, args = _del_node_inventory(tmp_path, etcd_cluster)

    for _ in range(2):  # and del-node.yml run twice is the same
        proc = playbook(REPO / "playbooks" / "del-node.yml", *args, inventory=inv)
        out = proc.stdout + proc.stderr
        assert recap(proc.stdout, "127.0.0.1") | {"ok": 0, "skipped": 0} == {
            "ok": 0, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 0, "rescued": 0, "ignored": 0}, out
        # The dead host itself is skipped (unreachable), which fails nothing.
        assert proc.returncode == 0 and recap(proc.stdout, "10.99.0.2")["failed"] == 0, out
        removal = re.search(r"TASK \[Release the node's addresses[^\n]*\n(ok|changed): \[127\.0\.0\.1\]", proc.stdout)
        assert removal and removal.group(1) == "ok", out
        assert '"node_exists": false' in proc.stdout, out
        assert snapshot(etcd) == before  # nothing deleted twice, nothing written


@pytest.fixture
def guarded_inventory(tmp_path: Path, etcd_cluster) -> Path:
    """A cluster whose node cannot be reached (ssh to a closed port): any task on it shows as unreachable.
    The deploy host's cluster_dir holds the etcd's CA and a client certificate, as for an etcd with its own CA."""
    import shutil

    pki = etcd_cluster.pki
    ssl = tmp_path / "cluster" / "ssl"
    ssl.mkdir(parents=True)
    for src, dest in ((pki.ca, "ca.pem"), (pki.client_cert, "pycalico.pem"), (pki.client_key, "pycalico-key.pem")):
        shutil.copyfile(src, ssl / dest)
    (ssl / "pycalico-key.pem").chmod(0o600)
    inv = tmp_path / "hosts"
    inv.write_text(f"""
[kube_master]
10.99.0.1 ansible_host=127.0.0.1 ansible_port=9 ansible_connection=ssh

[kube_node]

[all:vars]
CLUSTER_CIDR="172.20.0.0/16"
ETCD_ENDPOINTS="{",".join(etcd_cluster.endpoints)}"
cluster_dir={tmp_path / "cluster"}
ansible_ssh_common_args='-o ConnectTimeout=2'
""")
    return inv


def test_network_guard_refuses_another_cluster_before_any_node_task(playbook, guarded_inventory, etcd):
    """issue 13 item 5: the deploy host reads the etcd's identity first; another CLUSTER_NAME stops the
    play before a single task runs on a node, and nothing is written to etcd."""
    store = ResourceStore(etcd)
    store.create(ClusterInformation("default", {"clusterGUID": "abc", "datastoreReady": True},
                                    metadata={"annotations": {"pycalico.io/cluster-name": "cluster-a"}}))
    before = snapshot(etcd)
    network = REPO / "playbooks" / "network.yml"

    for mode in ([], ["--check", "--diff"]):
        other = playbook(network, "-e", "CLUSTER_NAME=cluster-b", *mode, inventory=guarded_inventory)
        out = other.stdout + other.stderr
        assert other.returncode != 0, out
        assert "this etcd belongs to cluster 'cluster-a', not 'cluster-b'" in out
        assert re.findall(r"^PLAY \[(.*?)\]", other.stdout, re.M) == [
            "Preflight", "Cluster identity guard, from the deploy host"], out
        assert "10.99.0.1" not in other.stdout, out  # never contacted: no task, no recap line
        assert recap(other.stdout, "localhost")["failed"] == 1
        assert snapshot(etcd) == before

    # The right cluster passes the guard and goes on to the node (unreachable here, so it stops there).
    mine = playbook(network, "-e", "CLUSTER_NAME=cluster-a", inventory=guarded_inventory)
    out = mine.stdout + mine.stderr
    assert "Certificates and node preparation" in mine.stdout, out
    assert recap(mine.stdout, "10.99.0.1")["unreachable"] == 1, out
    assert recap(mine.stdout, "localhost")["failed"] == 0, out
    assert snapshot(etcd) == before


@pytest.mark.parametrize("pb", ["network.yml", "etcd.yml", "site.yml"])
def test_example_inventory_passes_preflight(playbook, tmp_path, pb):
    inv = tmp_path / "hosts"  # the example plus an explicit deploy host, so --limit can pick it alone
    inv.write_text(EXAMPLE.read_text() + f"\n[deploy]\nlocalhost ansible_connection=local "
                                         f"ansible_python_interpreter={sys.executable}\n")
    # The example's etcd does not exist: skip network.yml's deploy-host identity guard (tested below).
    proc = playbook(REPO / "playbooks" / pb, "--limit", "localhost", "--skip-tags", "cluster_guard", "-v",
                    inventory=inv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cluster cluster1: pool 172.20.0.0/16 (/26 blocks, IPIP Always, VXLAN Never, NAT True)" in proc.stdout


def test_module_defaults_group_gives_the_connection_once(playbook, tmp_path, connection, etcd):
    pb = tmp_path / "defaults.yml"
    pb.write_text(f"""
- name: Connection through module_defaults
  hosts: localhost
  connection: local
  gather_facts: false
  module_defaults:
    group/pycalico.network.datastore: {json.dumps(connection)}
  tasks:
    - name: Pool
      pycalico.network.ippool:
        cidr: 10.66.0.0/16
    - name: Peer
      pycalico.network.bgp_peer:
        name: tor
        peer_ip: 192.0.2.1
        as_number: 64513
""")
    proc = playbook(pb, "-e", f"ansible_python_interpreter={sys.executable}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = ResourceStore(etcd)
    assert store.get(IPPool, "default-ipv4-ippool").cidr == "10.66.0.0/16"
    assert store.get(BGPPeer, "tor").peer_ip == "192.0.2.1"


def test_kubeasz_names_reach_the_role_variables(ansible_env, tmp_path):
    """playbooks/group_vars maps the inventory's kubeasz names onto every role's variables."""
    import subprocess

    from tests.collection.conftest import VENV_BIN

    names = ["agent_nodename", "agent_ip", "agent_ip_autodetection_method", "agent_etcd_endpoints",
             "agent_pool_ipip_mode", "agent_pool_vxlan_mode", "agent_rr_cluster_id", "agent_node_labels",
             "bgp_backend", "cni_etcd_endpoints", "cluster_name", "cluster_pool_cidr", "cluster_node_names",
             "cluster_rr_node_names", "certs_dir", "node_wheel_cache", "cni_kubernetes", "pycalico_python",
             "node_install_root", "agent_venv", "bgp_venv", "cni_python", "kube_controllers_venv",
             "clean_install_root"]
    msg = "{{ {" + ", ".join(f"'{n}': {n}" for n in names) + "} | to_json }}"
    env = dict(ansible_env, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json")
    proc = subprocess.run(
        [str(VENV_BIN / "ansible"), "kube_master:kube_node", "-i", str(EXAMPLE), "--playbook-dir",
         str(REPO / "playbooks"), "-m", "ansible.builtin.debug", "-a", f"msg={msg}",
         "-e", "CALICO_RR_ENABLED=true", "-e", "CALICO_IPV4POOL_IPIP=off", "-e", "cluster_dir=/srv/clusters/c1",
         "-e", "CALICO_NETWORKING_BACKEND=bird", "-e", "pycalico_install_root=/srv/pycalico"],
        env=env, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hosts = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]
    got = {h: json.loads(r["msg"]) if isinstance(r["msg"], str) else r["msg"] for h, r in hosts.items()}
    master, worker = got["192.168.1.1"], got["192.168.1.2"]
    endpoints = "https://192.168.1.1:2379,https://192.168.1.2:2379,https://192.168.1.3:2379"
    assert master["agent_nodename"] == "master-01" and worker["agent_nodename"] == "worker-01"
    assert worker["agent_ip"] == "autodetect" and worker["agent_ip_autodetection_method"] == "can-reach=192.168.1.1"
    assert worker["agent_etcd_endpoints"] == endpoints == worker["cni_etcd_endpoints"]
    assert (worker["agent_pool_ipip_mode"], worker["agent_pool_vxlan_mode"]) == ("Never", "Never")
    assert master["agent_rr_cluster_id"] == "244.0.0.1" and master["agent_node_labels"] == {"route-reflector": "true"}
    assert worker["agent_rr_cluster_id"] == "" and worker["agent_node_labels"] == {}
    assert master["cluster_rr_node_names"] == ["master-01"]
    assert sorted(master["cluster_node_names"]) == ["master-01", "worker-01", "worker-02"]
    assert master["cluster_name"] == "cluster1" and master["cluster_pool_cidr"] == "172.20.0.0/16"
    assert master["bgp_backend"] == "bird"
    assert (master["certs_dir"], master["node_wheel_cache"]) == ("/srv/clusters/c1/ssl", "/srv/clusters/c1/wheels")
    assert master["cni_kubernetes"] is False  # plain CNI unless the inventory says pycalico_kubernetes=true
    # One variable for where pycalico lives; everything runs through the current release.
    assert (master["node_install_root"], master["clean_install_root"]) == ("/srv/pycalico", "/srv/pycalico")
    assert {master[v] for v in ("agent_venv", "bgp_venv", "kube_controllers_venv")} == {"/srv/pycalico/current"}
    assert master["pycalico_python"] == "/srv/pycalico/current/bin/python3"
    assert master["cni_python"] == "/srv/pycalico/current/bin/python"


def test_built_collection_installs_and_runs_its_playbooks(ansible_env, tmp_path):
    """ansible-galaxy build + install: the artifact carries the package sources (the node role builds
    wheels from them) and its playbooks run by FQCN with the kubeasz variable mapping."""
    import subprocess

    from tests.collection.conftest import VENV_BIN

    galaxy = str(VENV_BIN / "ansible-galaxy")
    subprocess.run([galaxy, "collection", "build", str(REPO), "--output-path", str(tmp_path / "dist")],
                   env=ansible_env, check=True, capture_output=True, timeout=120)
    tarball = next((tmp_path / "dist").glob("pycalico-network-*.tar.gz"))
    installed = tmp_path / "installed"
    subprocess.run([galaxy, "collection", "install", str(tarball), "-p", str(installed), "--force", "--no-deps"],
                   env=ansible_env, check=True, capture_output=True, timeout=120)
    root = installed / "ansible_collections" / "pycalico" / "network"
    for path in ("pyproject.toml", "src/pycalico/model/__init__.py", "roles/node/tasks/wheels.yml",
                 "playbooks/group_vars/all/pycalico.yml", "plugins/modules/ippool.py"):
        assert (root / path).exists(), path
    assert not (root / "tests").exists() and not (root / ".venv").exists()

    inv = tmp_path / "hosts"
    inv.write_text(EXAMPLE.read_text() + f"\n[deploy]\nlocalhost ansible_connection=local "
                                         f"ansible_python_interpreter={sys.executable}\n")
    env = dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(installed))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "pycalico.network.network", "-i", str(inv),
                           "--limit", "localhost", "--skip-tags", "cluster_guard", "-v"],
                          env=env, capture_output=True, text=True, check=False,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cluster cluster1: pool 172.20.0.0/16" in proc.stdout
