"""VXLAN CrossSubnet across two subnets joined by a router namespace: same-subnet traffic is
routed directly, cross-subnet traffic goes through vxlan.calico (proved with device counters)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from tests.support.cluster import ping, ping_until, running_cluster
from tests.support.topology import Host

pytestmark = pytest.mark.netns


def vxlan_tx(host: Host) -> int:
    data = json.loads(host.run("ip", "-j", "-s", "link", "show", "vxlan.calico").stdout)
    return int(data[0]["stats64"]["tx"]["packets"])


def test_cross_subnet_encapsulates_only_between_subnets(etcd_cluster, etcd, unique):
    env = {"CALICO_NETWORKING_BACKEND": "vxlan"}
    with running_cluster(etcd_cluster, etcd, unique, [2, 1], env=env) as cl:
        cl.create_pool("10.249.0.0/16", vxlan="CrossSubnet")
        cl.start(bird=False)
        a, b, c = cl.hosts
        assert a.subnet == b.subnet != c.subnet
        pa, pb, pc = (cl.add_pod(h, "p") for h in (a, b, c))
        ping_until(pa, pb.ip)
        ping_until(pa, pc.ip)

        routes = a.routes()
        block_b = str(ipaddress.ip_network(f"{pb.ip}/26", strict=False))
        block_c = str(ipaddress.ip_network(f"{pc.ip}/26", strict=False))
        assert f"{block_b} via {b.addr} dev eth0 proto 80 onlink" in routes
        assert any(line.startswith(f"{block_c} via ") and "dev vxlan.calico" in line for line in routes.splitlines())

        before = vxlan_tx(a)
        assert ping(pa, pb.ip, count=20, timeout=1)
        assert vxlan_tx(a) == before, "same-subnet traffic went through the VXLAN device"
        assert ping(pa, pc.ip, count=20, timeout=1)
        assert vxlan_tx(a) >= before + 20, "cross-subnet traffic was not encapsulated"
