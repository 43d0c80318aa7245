"""ADD/DEL/CHECK/STATUS/GC behaviour beyond the happy path; both executable paths."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from pycalico.ipam import IPAM
from pycalico.model import ClusterInformation, WorkloadEndpoint, keys
from tests.cni.conftest import host_links, leftovers, pod_links
from tests.support.cni_env import CniEnv
from tests.support.etcd import stored_value
from tests.support.poll import wait_until

pytestmark = pytest.mark.netns


@pytest.fixture
def pods(cni: CniEnv) -> Iterator[list[tuple[str, str, str]]]:
    """Pod namespaces for one test; whatever the test leaves is deleted afterwards."""
    made: list[tuple[str, str, str]] = []

    class Maker(list):
        def new(self, index: int | str) -> tuple[str, str, str]:
            pod = cni.new_pod(index)
            self.append(pod)
            return pod

    maker = Maker()
    yield maker  # type: ignore[misc]
    made = list(maker)
    try:
        if leftovers(cni):
            for _, path, cid in made:
                cni.cni("DEL", cid, path)
                cni.cni("DEL", cid, path, args="K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0")
    finally:
        for name, _, _ in made:
            cni.remove_pod(name)


def _set_ready(cni: CniEnv, ready: bool) -> None:
    info = cni.store.get(ClusterInformation, "default")
    assert info is not None
    info.spec["datastoreReady"] = ready
    cni.store.update(info)


def test_result_is_shaped_for_each_cni_version(cni: CniEnv, pods) -> None:
    for i, version in enumerate(("0.3.1", "0.4.0", "1.0.0", "1.1.0")):
        name, path, cid = pods.new(f"v{i}")
        out = cni.cni("ADD", cid, path, conf=cni.netconf(version))
        assert out.code == 0, out.stdout
        result = out.json
        assert result["cniVersion"] == version
        host, cont = result["interfaces"]
        assert host == {"name": "cali" + cid[:11], "mac": "ee:ee:ee:ee:ee:ee"}
        assert cont["name"] == "eth0" and cont["sandbox"] == path
        ip = result["ips"][0]
        assert ip["interface"] == 1 and ip["address"].endswith("/32")
        assert ("version" in ip) == (version in ("0.3.1", "0.4.0"))
        assert ("mtu" in cont) == (version == "1.1.0")
        assert cont.get("mtu", 1440) == 1440  # from the agent's MTU file
        assert cni.cni("DEL", cid, path, conf=cni.netconf(version)).code == 0
    assert leftovers(cni) == []


def test_mtu_from_config_wins_over_the_agent_file(cni: CniEnv, pods) -> None:
    name, path, cid = pods.new("mtu")
    out = cni.cni("ADD", cid, path, conf=cni.netconf(mtu=1400))
    assert out.code == 0, out.stdout
    assert "mtu 1400" in subprocess.run(["ip", "-n", name, "link", "show", "eth0"], capture_output=True,
                                        text=True).stdout
    assert cni.cni("DEL", cid, path).code == 0


def test_kubernetes_pod_is_named_as_calico_names_it(cni: CniEnv, pods) -> None:
    name, path, cid = pods.new("k8s")
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=" + cid
    out = cni.cni("ADD", cid, path, args=args)
    assert out.code == 0, out.stdout
    veth = "cali" + hashlib.sha1(b"ns1.web-0").hexdigest()[:11]
    assert out.json["interfaces"][0]["name"] == veth
    assert host_links() == [veth]
    wep = cni.store.get(WorkloadEndpoint, "node--1-k8s-web--0-eth0", "ns1")
    assert wep is not None
    assert wep.spec["pod"] == "web-0" and wep.spec["orchestrator"] == "k8s"
    assert wep.spec["containerID"] == cid and wep.spec["interfaceName"] == veth
    assert wep.labels["projectcalico.org/namespace"] == "ns1"
    block = IPAM(cni.client).blocks()[0]
    attrs = [a for _, a in block.allocated()]
    assert attrs[0]["handle_id"] == f"k8s-pod-network.{cid}"
    assert attrs[0]["secondary"]["pod"] == "web-0" and attrs[0]["secondary"]["namespace"] == "ns1"
    assert cni.cni("DEL", cid, path, args=args).code == 0
    assert leftovers(cni) == []


def test_del_succeeds_when_netns_is_gone(cni: CniEnv, pods) -> None:
    name, path, cid = pods.new("gone")
    assert cni.cni("ADD", cid, path).code == 0
    cni.remove_pod(name)  # the runtime tore the sandbox down first: the veth died with it
    out = cni.cni("DEL", cid, path)
    assert (out.code, out.stdout, out.stderr) == (0, "", "")
    env = cni.env("DEL", cid, "")  # and DEL without CNI_NETNS at all
    assert cni.invoke(env, cni.netconf()).code == 0
    assert leftovers(cni) == []


def test_del_of_an_unknown_container_succeeds(cni: CniEnv, pods) -> None:
    name, path, cid = pods.new("never")
    out = cni.cni("DEL", cid, path)
    assert (out.code, out.stdout, out.stderr) == (0, "", "")
    assert pod_links(name) == ["lo"]


def test_check_fails_when_the_pod_lost_its_address(cni: CniEnv, pods) -> None:
    name, path, cid = pods.new("chk")
    add = cni.cni("ADD", cid, path)
    assert add.code == 0
    ip = add.json["ips"][0]["address"]
    subprocess.run(["ip", "-n", name, "addr", "del", ip, "dev", "eth0"], check=True)
    out = cni.cni("CHECK", cid, path, conf=cni.netconf(prevResult=add.json))
    assert out.code == 106 and ip in out.json["msg"]
    no_prev = cni.cni("CHECK", cid, path)
    assert no_prev.code == 7 and "prevResult" in no_prev.json["msg"]
    assert cni.cni("DEL", cid, path).code == 0


def test_add_refused_while_datastore_not_ready(cni: CniEnv, pods) -> None:
    name, path, cid = pods.new("nr")
    _set_ready(cni, False)
    try:
        def refused() -> bool:
            out = cni.cni("ADD", cid, path)
            if out.code == 0:  # a cached "ready" in the agent: undo and ask again
                cni.cni("DEL", cid, path)
                return False
            assert out.code == 101 and "not ready" in out.json["msg"]
            return True

        assert wait_until(refused, timeout=10, interval=0.2)
        assert leftovers(cni) == []
        status = cni.cni("STATUS", conf=cni.netconf("1.1.0"))
        assert status.code == 50
    finally:
        _set_ready(cni, True)
    assert cni.cni("STATUS", conf=cni.netconf("1.1.0")).code == 0


def test_status_reflects_the_datastore(cni: CniEnv) -> None:
    ok = cni.cni("STATUS", conf=cni.netconf("1.1.0"))
    assert (ok.code, ok.stdout, ok.stderr) == (0, "", "")
    down = cni.cni("STATUS", conf=cni.netconf("1.1.0", etcd_endpoints="https://127.0.0.1:1"))
    assert down.code == 50 and down.json["cniVersion"] == "1.1.0"
    no_node = cni.cni("STATUS", conf=cni.netconf("1.1.0", nodename_file=str(cni.base / "missing")))
    assert no_node.code == 50
    ipam = cni.cni("STATUS", conf=cni.netconf("1.1.0"), plugin="pycalico-ipam")
    assert ipam.code == 0


def test_gc_releases_only_what_is_not_a_valid_attachment(cni: CniEnv, pods) -> None:
    made = [pods.new(f"gc{i}") for i in range(3)]
    results = {}
    for _name, path, cid in made:
        out = cni.cni("ADD", cid, path)
        assert out.code == 0
        results[cid] = out.json["ips"][0]["address"].split("/")[0]
    # An allocation whose ADD never finished (IPAM only, no endpoint).
    orphan = "orphan0123456789"
    out = cni.invoke(cni.env("ADD", orphan, made[0][1]), cni.netconf(), plugin="pycalico-ipam")
    assert out.code == 0 and out.json["ips"][0]["address"].endswith("/26")
    # Another network's allocation on this node is none of this GC's business.
    other = cni.invoke(cni.env("ADD", "othernet0123", made[0][1]), cni.netconf(name="other-net"),
                       plugin="pycalico-ipam")
    assert other.code == 0

    keep = made[:2]
    conf = cni.netconf("1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": cid, "ifname": "eth0"} for _, _, cid in keep]
    out = cni.cni("GC", conf=conf)
    assert (out.code, out.stdout, out.stderr) == (0, "", "")

    ipam = IPAM(cni.client)
    for _, _, cid in keep:
        assert [str(ip) for ip in ipam.ips_by_handle(f"k8s-pod-network.{cid}")] == [results[cid]]
    gone = made[2][2]
    assert ipam.ips_by_handle(f"k8s-pod-network.{gone}") == []
    assert ipam.ips_by_handle(f"k8s-pod-network.{orphan}") == []
    assert len(ipam.ips_by_handle("other-net.othernet0123")) == 1
    weps = {w.container_id for w in cni.store.list(WorkloadEndpoint)}
    assert weps == {cid for _, _, cid in keep}
    # pods still work
    for _, path, cid in keep:
        assert cni.cni("DEL", cid, path).code == 0
    cni.cni("DEL", gone, made[2][1])
    assert cni.invoke(cni.env("DEL", "othernet0123", made[0][1]), cni.netconf(name="other-net"),
                      plugin="pycalico-ipam").code == 0
    assert leftovers(cni) == []


def test_ipam_plugin_alone_assigns_and_releases(cni: CniEnv, pods) -> None:
    name, path, cid = pods.new("ipam")
    out = cni.invoke(cni.env("ADD", cid, path), cni.netconf("0.4.0"), plugin="pycalico-ipam")
    assert out.code == 0
    assert out.json["ips"][0]["version"] == "4" and out.json["ips"][0]["address"].endswith("/26")
    assert "interfaces" not in out.json
    check = cni.invoke(cni.env("CHECK", cid, path), cni.netconf("0.4.0", prevResult=out.json),
                       plugin="pycalico-ipam")
    assert check.code == 0, check.stdout
    for _ in range(2):
        assert cni.invoke(cni.env("DEL", cid, path), cni.netconf("0.4.0"), plugin="pycalico-ipam").code == 0
    assert leftovers(cni) == []


def test_other_ipam_types_are_delegated_by_exec(cni: CniEnv, pods) -> None:
    name, path, cid = pods.new("hl")
    data_dir = cni.base / "host-local"
    ipam = {"type": "host-local", "ranges": [[{"subnet": "10.78.0.0/24"}]], "dataDir": str(data_dir)}
    out = cni.cni("ADD", cid, path, conf=cni.netconf(ipam=ipam))
    assert out.code == 0, out.stdout
    ip = out.json["ips"][0]["address"]
    assert ip.startswith("10.78.0.") and ip.endswith("/32")
    assert (data_dir / "k8s-pod-network" / ip.split("/")[0]).exists()
    assert cni.cni("DEL", cid, path, conf=cni.netconf(ipam=ipam)).code == 0
    assert not (data_dir / "k8s-pod-network" / ip.split("/")[0]).exists()
    assert leftovers(cni) == []


def test_etcd_down_means_try_again_later_and_del_still_cleans_the_dataplane(cni: CniEnv, pods) -> None:
    name, path, cid = pods.new("down")
    assert cni.cni("ADD", cid, path).code == 0
    name2, path2, cid2 = pods.new("down2")
    assert cni.etcd is not None
    cni.etcd.stop_member(0)
    try:
        add = cni.cni("ADD", cid2, path2)
        assert add.code == 11 and add.stderr == ""
        status = cni.cni("STATUS", conf=cni.netconf("1.1.0"))
        assert status.code == 50  # also when the agent's cache still remembers a ready cluster
        assert pod_links(name2) == ["lo"]
        gone = cni.cni("DEL", cid, path)
        assert gone.code == 11
        assert pod_links(name) == ["lo"]  # the veth is gone already
    finally:
        cni.etcd.restart_member(0)
        # This thread's kept-alive TLS connection died with the old etcd process.
        cni.client.close()
    assert cni.cni("DEL", cid, path).code == 0
    assert leftovers(cni) == []


def test_stale_socket_falls_back_to_in_process(cni: CniEnv, pods) -> None:
    if not cni.fast:
        pytest.skip("only the fast path has a socket")
    name, path, cid = pods.new("stale")
    cni.stop_server()
    try:
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(cni.socket_path)  # a socket file nobody listens on
        stale.close()
        assert os.path.exists(cni.socket_path)
        out = cni.cni("ADD", cid, path)
        assert out.code == 0, out.stdout
        assert cni.cni("DEL", cid, path).code == 0
        os.unlink(cni.socket_path)
        out = cni.cni("ADD", cid, path)  # and no socket file at all
        assert out.code == 0, out.stdout
        assert cni.cni("DEL", cid, path).code == 0
    finally:
        cni.start_server()
    assert json.loads(oct(os.stat(cni.socket_path).st_mode & 0o777)[2:] or "0") == 600
    assert leftovers(cni) == []


def test_handle_and_endpoint_keys_are_calicos(cni: CniEnv, pods) -> None:
    name, path, cid = pods.new("keys")
    assert cni.cni("ADD", cid, path).code == 0
    wep_key = keys.resource_key("workloadendpoints", f"node--1-cni-{cid}-eth0", "default")
    kv = cni.client.get(wep_key)
    assert kv is not None
    data = json.loads(kv.value)
    assert data["kind"] == "WorkloadEndpoint" and data["apiVersion"] == "projectcalico.org/v3"
    assert data["spec"]["workload"] == cid and data["spec"]["endpoint"] == "eth0"
    assert data["spec"]["profiles"] == ["k8s-pod-network"]
    # the network's profile, as Calico's plugin makes it when no policy type is configured
    profile = json.loads(stored_value(cni.client, keys.resource_key("profiles", "k8s-pod-network")) or "null")
    assert profile["spec"]["labelsToApply"] == {"k8s-pod-network": ""}
    assert profile["spec"]["egress"] == [{"action": "Allow"}]
    assert profile["spec"]["ingress"] == [{"action": "Allow", "source": {"selector": "has(k8s-pod-network)"}}]
    assert cni.client.get(f"/calico/ipam/v2/handle/k8s-pod-network.{cid}") is not None
    assert cni.cni("DEL", cid, path).code == 0
    assert cni.client.get(wep_key) is None


def test_second_add_of_an_attachment_fails_and_leaves_the_first_working(cni: CniEnv, pods) -> None:
    name, path, cid = pods.new("dup")
    first = cni.cni("ADD", cid, path)
    assert first.code == 0
    second = cni.cni("ADD", cid, path)
    assert second.code == 105 and "already exists" in second.json["msg"]
    ip = first.json["ips"][0]["address"].split("/")[0]
    assert [str(a) for a in IPAM(cni.client).ips_by_handle(f"k8s-pod-network.{cid}")] == [ip]
    check = cni.cni("CHECK", cid, path, conf=cni.netconf(prevResult=first.json))
    assert check.code == 0, check.stdout
    assert cni.cni("DEL", cid, path).code == 0
    again = cni.cni("ADD", cid, path)  # a runtime's retry after DEL
    assert again.code == 0
    assert cni.cni("DEL", cid, path).code == 0
    assert leftovers(cni) == []
