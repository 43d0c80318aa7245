"""BGP full mesh across three namespace nodes: real etcd, agent, confd, BIRD, pods."""

from __future__ import annotations

import urllib.request

import pytest

from tests.support.cluster import ping_until, running_cluster
from tests.support.topology import in_netns, poll

pytestmark = pytest.mark.netns


def test_mesh_pods_reach_every_other_node_over_bird_routes(etcd_cluster, etcd, unique):
    with running_cluster(etcd_cluster, etcd, unique, [3]) as cl:
        cl.create_pool("10.244.0.0/16")
        cl.start()
        pods = [cl.add_pod_cni(h, "web") for h in cl.hosts]  # the CNI plugin, through each agent's socket
        for h in cl.hosts:
            assert "CNI fast path listening" in h.log("agent")
            with in_netns(h.ns), urllib.request.urlopen("http://127.0.0.1:9091/metrics", timeout=3) as resp:
                metrics = resp.read().decode()
            assert 'pycalico_agent_cni_requests_total{result="ok",verb="ADD"} 1.0' in metrics

        # every node learns every other node's block from BIRD
        for host in cl.hosts:
            for other in pods:
                if other.host is host:
                    continue
                block = other.ip.rsplit(".", 1)[0]
                poll(lambda h=host, b=block, o=other: any(
                    line.startswith(b) and "proto bird" in line and f"via {o.host.addr}" in line
                    for line in h.routes().splitlines()), 20, what=f"{host.name} learns {other.ip}'s block")
        for src in pods:
            for dst in pods:
                if src is not dst:
                    ping_until(src, dst.ip)

        # the local block is a blackhole owned by the agent
        for host, pod in zip(cl.hosts, pods, strict=True):
            routes = host.routes()
            assert any(line.startswith("blackhole 10.244.") and "proto 80" in line for line in routes.splitlines())
            assert f"{pod.ip} dev {pod.veth}" in routes

        for host in cl.hosts:
            def established(h=host):
                out = h.ctl("node", "status").stdout
                return out.count("Established") == 2 and "node-to-node mesh" in out and out
            out = poll(established, 20, what=f"{host.name} node status shows 2 Established peers")
            assert "pycalico agent is running." in out
            for other in cl.hosts:
                if other is not host:
                    assert other.addr in out
