"""Flannel's host-gw as pycalico runs it: no BGP, no encapsulation, direct routes to nodes on
the same subnet; a node in another subnet is refused with a clear error."""

from __future__ import annotations

import ipaddress
import json
import urllib.request

import pytest

from tests.support.cluster import ping_until, running_cluster
from tests.support.topology import in_netns, poll

pytestmark = pytest.mark.netns


def test_host_gw_routes_directly_and_names_the_node_it_cannot_reach(etcd_cluster, etcd, unique):
    env = {"CALICO_NETWORKING_BACKEND": "none", "CALICO_IPV4POOL_CIDR": "10.251.0.0/16",
           "CALICO_IPV4POOL_IPIP": "Never", "CALICO_IPV4POOL_VXLAN": "Never"}
    with running_cluster(etcd_cluster, etcd, unique, [2, 1], env=env) as cl:
        cl.start(bird=False)
        a, b, far = cl.hosts
        pod_a, pod_b, pod_far = cl.add_pod(a, "x"), cl.add_pod(b, "y"), cl.add_pod(far, "z")
        ping_until(pod_a, pod_b.ip)  # same subnet: a direct route via b's address
        assert f"via {b.addr} dev eth0 proto 80 onlink" in a.routes()
        poll(lambda: f"no route: node {far.name} ({far.addr}) is outside this node's subnet" in a.log("agent"), 20,
             what="the agent names the node in another subnet")
        far_block = str(ipaddress.ip_network(f"{pod_far.ip}/26", strict=False))
        # (not the /24 text: another node's block may share it)
        assert not [r for r in a.routes().splitlines() if r.startswith(far_block + " ")]
        with in_netns(a.ns), urllib.request.urlopen("http://127.0.0.1:9099/readiness", timeout=3) as resp:
            body = json.loads(resp.read())
        assert far.name in json.dumps(body)
        assert a.log("agent").count(f"no route: node {far.name}") == 1  # once, not on every resync
