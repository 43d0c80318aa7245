"""Chaining: our result is a correct prevResult for Debian's portmap and bandwidth, through a conflist."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from tests.cni.conftest import leftovers
from tests.support.cni_env import DEBIAN_CNI, HOST_IP, CniEnv, netns_path, run_chain, socket_in

pytestmark = pytest.mark.netns


def _conflist(cni: CniEnv) -> dict:
    first = cni.netconf()
    first.pop("cniVersion")
    first.pop("name")
    return {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "plugins": [first, {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}],
    }


def _nat_rules() -> str:
    return subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout


@pytest.mark.skipif(not os.path.exists(f"{DEBIAN_CNI}/portmap"), reason="Debian containernetworking-plugins")
def test_portmap_forwards_a_host_port_to_the_pod(cni: CniEnv) -> None:
    name, path, cid = cni.new_pod("pm")
    conflist = _conflist(cni)
    rc = {"portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]}
    server = socket_in(path)
    try:
        added = run_chain(cni, "ADD", conflist, cid, path, rc)
        assert added.code == 0, added.stdout
        result = added.json
        pod_ip = result["ips"][0]["address"].split("/")[0]
        assert "18080" in _nat_rules() and pod_ip in _nat_rules()

        server.bind((pod_ip, 8080))
        server.listen(1)
        server.settimeout(10)
        got: list[bytes] = []

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                got.append(conn.recv(100))
                conn.sendall(b"pong")

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        client = socket_in(netns_path(cni.gw_ns))
        with client:
            client.settimeout(10)
            client.connect((HOST_IP, 18080))
            client.sendall(b"ping")
            assert client.recv(100) == b"pong"
        t.join(10)
        assert got == [b"ping"]

        # CHECK of our plugin with the chain's final result. (Debian's portmap 1.1.1 fails its
        # own CHECK for IPv4-only pods: containernetworking/plugins#819, fixed upstream.)
        ours = {**conflist, "plugins": conflist["plugins"][:1]}
        check = run_chain(cni, "CHECK", ours, cid, path, rc, prev=result)
        assert check.code == 0, check.stdout
        deleted = run_chain(cni, "DEL", conflist, cid, path, rc, prev=result)
        assert deleted.code == 0, deleted.stdout
        assert "18080" not in _nat_rules()
        assert leftovers(cni) == []
    finally:
        server.close()
        run_chain(cni, "DEL", conflist, cid, path, rc)
        cni.remove_pod(name)


@pytest.mark.skipif(not os.path.exists(f"{DEBIAN_CNI}/bandwidth"), reason="Debian containernetworking-plugins")
def test_bandwidth_shapes_our_host_veth(cni: CniEnv) -> None:
    name, path, cid = cni.new_pod("bw")
    first = cni.netconf()
    first.pop("cniVersion")
    first.pop("name")
    conflist = {"cniVersion": "1.0.0", "name": "k8s-pod-network",
                "plugins": [first, {"type": "bandwidth", "capabilities": {"bandwidth": True}}]}
    rc = {"bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000,
                        "egressRate": 1000000, "egressBurst": 100000}}
    try:
        added = run_chain(cni, "ADD", conflist, cid, path, rc)
        assert added.code == 0, added.stdout
        host_if = added.json["interfaces"][0]["name"]
        ifb = added.json["interfaces"][2]["name"]  # bandwidth found our host side in prevResult
        qdiscs = subprocess.run(["tc", "qdisc", "show", "dev", host_if], capture_output=True, text=True).stdout
        assert "tbf" in qdiscs
        deleted = run_chain(cni, "DEL", conflist, cid, path, rc, prev=added.json)
        assert deleted.code == 0, deleted.stdout
        assert subprocess.run(["ip", "link", "show", ifb], capture_output=True).returncode != 0
        assert leftovers(cni) == []
    finally:
        run_chain(cni, "DEL", conflist, cid, path, rc)
        cni.remove_pod(name)
