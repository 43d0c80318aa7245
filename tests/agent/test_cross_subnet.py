"""VXLAN CrossSubnet across two subnets joined by a router namespace: same-subnet traffic is
routed directly, cross-subnet traffic goes through vxlan.calico (proved with device counters)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from pycalico.model import Node
from tests.support.cluster import ping, ping_until, running_cluster
from tests.support.topology import Host, poll

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


def test_ipip_pool_on_a_kernel_without_ipip_allocates_and_computes_but_programs_no_tunnel(etcd_cluster, etcd, unique):
    """This kernel has no ipip: the agent allocates tunl0's address, writes the IPIP pod MTU and keeps
    its blackholes, and leaves the tunnel routes out (BIRD still carries the blocks)."""
    with running_cluster(etcd_cluster, etcd, unique, [2], env={"CALICO_IPV4POOL_CIDR": "10.243.0.0/16",
                                                             "CALICO_IPV4POOL_IPIP": "Always"}) as cl:
        cl.start()
        a, b = cl.hosts
        pa, pb = cl.add_pod(a, "p"), cl.add_pod(b, "q")
        for host in (a, b):
            node = cl.store.must_get(Node, host.name)
            assert node.ipip_tunnel_addr.startswith("10.243.")
            assert (host.state_dir / "mtu").read_text().strip() == "1480"
        poll(lambda: "no ipip support" in a.log("agent"), 15, what="the agent says why tunl0 is missing")
        poll(lambda: "blackhole " + str(ipaddress.ip_network(f"{pa.ip}/26", strict=False)) in a.routes(), 15,
             what="blackhole for the local block")
        assert "tunl0" not in a.routes()
        conf = (a.bird_dir / "bird.conf").read_text()
        assert "if net ~ 10.243.0.0/16 then reject;" in conf.split("filter calico_kernel_programming")[1]
        assert pb.ip
