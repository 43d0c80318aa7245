"""Many pods on one node: real veths, real pings, real etcd; both executable paths."""

from __future__ import annotations

import ipaddress
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from pycalico.ipam import IPAM
from pycalico.model import WorkloadEndpoint, keys
from tests.cni.conftest import host_links, leftovers, pod_links
from tests.support.cni_env import HOST_IP, CniEnv, ping_from

pytestmark = pytest.mark.netns

PODS = 50


def test_fifty_pods_reach_the_host_and_each_other_then_del_removes_everything(cni: CniEnv) -> None:
    pods = [cni.new_pod(i) for i in range(PODS)]
    results: dict[str, dict] = {}
    try:
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda p: cni.cni("ADD", p[2], p[1]), pods))
        for (name, _, _), out in zip(pods, outcomes, strict=True):
            assert out.code == 0, f"{name}: {out.stdout} {out.stderr}"
            assert out.stderr == ""
            results[name] = out.json
        ips = {name: r["ips"][0]["address"].split("/")[0] for name, r in results.items()}
        assert len(set(ips.values())) == PODS
        for ip in ips.values():
            assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.77.0.0/16")

        # Calico's dataplane on both sides.
        name, path, cid = pods[0]
        host_if = results[name]["interfaces"][0]["name"]
        assert host_if.startswith("cali") and len(host_if) == 15
        link = subprocess.run(["ip", "-o", "link", "show", host_if], capture_output=True, text=True).stdout
        assert "ee:ee:ee:ee:ee:ee" in link and "mtu 1440" in link
        for knob, value in (("conf/%s/proxy_arp", "1"), ("neigh/%s/proxy_delay", "0"),
                            ("conf/%s/forwarding", "1")):
            with open("/proc/sys/net/ipv4/" + knob % host_if) as f:
                assert f.read().strip() == value
        routes = subprocess.run(["ip", "-4", "route", "show", "dev", host_if], capture_output=True,
                                text=True).stdout
        assert f"{ips[name]} scope link" in routes
        pod_routes = subprocess.run(["ip", "-n", name, "-4", "route", "show"], capture_output=True,
                                    text=True).stdout
        assert "default via 169.254.1.1 dev eth0" in pod_routes
        assert "169.254.1.1 dev eth0 scope link" in pod_routes
        pod_addr = subprocess.run(["ip", "-n", name, "-4", "-o", "addr", "show", "dev", "eth0"],
                                  capture_output=True, text=True).stdout
        assert f"{ips[name]}/32" in pod_addr

        # Every pod answers the host and every other pod.
        targets = [HOST_IP, *ips.values()]
        for name, path, _ in pods:
            answered = ping_from(path, targets, timeout=10)
            assert answered == set(targets), f"{name} could not reach {set(targets) - answered}"

        # CHECK passes with the ADD result as prevResult.
        with ThreadPoolExecutor(8) as pool:
            checks = list(pool.map(lambda p: cni.cni("CHECK", p[2], p[1], conf=cni.netconf(prevResult=results[p[0]])),
                                   pods))
        assert [(o.code, o.stdout, o.stderr) for o in checks] == [(0, "", "")] * PODS

        # The datastore holds an endpoint and a handle per pod.
        weps = cni.store.list(WorkloadEndpoint)
        assert len(weps) == PODS
        wep = next(w for w in weps if w.container_id == pods[0][2])
        assert wep.spec["ipNetworks"] == [f"{ips[pods[0][0]]}/32"]
        assert wep.spec["interfaceName"] == results[pods[0][0]]["interfaces"][0]["name"]
        assert wep.spec["node"] == cni.nodename and wep.spec["orchestrator"] == "cni"
        assert cni.client.get(keys.handle_key(f"k8s-pod-network.{pods[0][2]}")) is not None

        # DEL removes veth, route, address, endpoint and handle; a second DEL succeeds.
        with ThreadPoolExecutor(8) as pool:
            dels = list(pool.map(lambda p: cni.cni("DEL", p[2], p[1]), pods))
        assert [(o.code, o.stdout, o.stderr) for o in dels] == [(0, "", "")] * PODS
        for name, _, _ in pods:
            assert pod_links(name) == ["lo"]
        with ThreadPoolExecutor(8) as pool:
            again = list(pool.map(lambda p: cni.cni("DEL", p[2], p[1]), pods))
        assert [(o.code, o.stdout, o.stderr) for o in again] == [(0, "", "")] * PODS
        assert host_links() == []
        assert leftovers(cni) == []
        assert IPAM(cni.client).ips_by_handle(f"k8s-pod-network.{pods[0][2]}") == []
    finally:
        if leftovers(cni):
            for _, path, cid in pods:
                cni.cni("DEL", cid, path)
        for name, _, _ in pods:
            cni.remove_pod(name)
