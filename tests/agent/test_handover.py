"""Live migration VXLAN -> BGP with the real agent, confd and BIRD: when a pool loses its
encapsulation the agent keeps its VXLAN routes (and vxlan.calico) until BIRD's routes for the
same prefixes are in the kernel, so pods keep talking; without BIRD it gives up after
PYCALICO_HANDOVER_TIMEOUT."""

from __future__ import annotations

import ipaddress

import pytest

from pycalico.model import IPPool
from tests.support.cluster import background_ping, ping_summary, ping_until, running_cluster
from tests.support.topology import Host, poll

pytestmark = pytest.mark.netns


def route_line(host: Host, block: str) -> str:
    return "\n".join(line for line in host.routes().splitlines() if line.startswith(block + " "))


def has_link(host: Host, name: str) -> bool:
    return host.run("ip", "link", "show", name, check=False).returncode == 0


def test_vxlan_to_bgp_keeps_vxlan_routes_until_bird_routes_the_blocks(etcd_cluster, etcd, unique):
    env = {"CALICO_NETWORKING_BACKEND": "bird", "CALICO_IPV4POOL_CIDR": "10.238.0.0/16",
           "CALICO_IPV4POOL_VXLAN": "Always", "CALICO_IPV4POOL_IPIP": "Never"}
    with running_cluster(etcd_cluster, etcd, unique, [2], env=env) as cl:
        cl.start()  # BIRD already runs beside the VXLAN pool: it learns the blocks, the kernel gets none
        a, b = cl.hosts
        pa, pb = cl.add_pod(a, "p"), cl.add_pod(b, "q")
        block_b = str(ipaddress.ip_network(f"{pb.ip}/26", strict=False))
        block_a = str(ipaddress.ip_network(f"{pa.ip}/26", strict=False))
        ping_until(pa, pb.ip)
        assert "dev vxlan.calico proto 80" in route_line(a, block_b)
        assert "proto bird" not in a.routes()

        pool = cl.store.must_get(IPPool, "default-ipv4-ippool")
        # a fixed count that outlasts the handover: the block waits for the last reply
        with background_ping(pa, pb.ip, interval=0.02, count=1500) as proc:
            for host in (a, b):  # BIRD keeps its old configuration: the agents must hold
                host.stop("confd")
            pool.spec["vxlanMode"] = "Never"
            cl.store.update(pool)
            for host in (a, b):
                poll(lambda h=host: "handover: keeping 1 routes" in h.log("agent"), 20,
                     what=f"{host.name}: the agent holds its VXLAN route")
            assert "dev vxlan.calico proto 80" in route_line(a, block_b)
            assert has_link(a, "vxlan.calico") and has_link(b, "vxlan.calico")
            for host in (a, b):
                host.start_confd()  # BIRD gets the pool without encapsulation and installs its routes
            for host, block in ((a, block_b), (b, block_a)):
                poll(lambda h=host, blk=block: "proto bird" in route_line(h, blk)
                     and "proto 80" not in route_line(h, blk), 30,
                     what=f"{host.name}: BIRD's route for {block} and no agent route left")
            for host in (a, b):
                poll(lambda h=host: not has_link(h, "vxlan.calico"), 30, what=f"{host.name}: vxlan.calico removed")
            ping_until(pa, pb.ip)
        sent, received = ping_summary(proc)
        assert sent == 1500 and received == sent, f"{sent - received} of {sent} pings lost during the handover"


def test_handover_gives_up_after_the_timeout_when_bird_never_routes(etcd_cluster, etcd, unique):
    env = {"CALICO_NETWORKING_BACKEND": "bird", "CALICO_IPV4POOL_CIDR": "10.237.0.0/16",
           "CALICO_IPV4POOL_VXLAN": "Always", "CALICO_IPV4POOL_IPIP": "Never", "PYCALICO_HANDOVER_TIMEOUT": "3"}
    with running_cluster(etcd_cluster, etcd, unique, [2], env=env) as cl:
        cl.start(bird=False)  # backend bird, but no BIRD: nobody takes the routes over
        a, b = cl.hosts
        pa, pb = cl.add_pod(a, "p"), cl.add_pod(b, "q")
        ping_until(pa, pb.ip)
        block_b = str(ipaddress.ip_network(f"{pb.ip}/26", strict=False))
        pool = cl.store.must_get(IPPool, "default-ipv4-ippool")
        pool.spec["vxlanMode"] = "Never"
        cl.store.update(pool)
        poll(lambda: "handover: keeping 1 routes" in a.log("agent"), 20, what="the agent holds its VXLAN route")
        assert "dev vxlan.calico proto 80" in route_line(a, block_b)
        assert has_link(a, "vxlan.calico")
        poll(lambda: route_line(a, block_b) == "", 30, what="the held route removed after the timeout")
        assert f"BIRD has no route for {block_b}" in a.log("agent")
        poll(lambda: not has_link(a, "vxlan.calico"), 30, what="vxlan.calico removed after the grace")
