"""Faults: the agent killed under traffic, a node removed, etcd down for 30 s."""

from __future__ import annotations

import ipaddress
import time
import urllib.error
import urllib.request

import pytest

from pycalico.model import Node
from tests.support.cluster import background_ping, ping_summary, ping_until, running_cluster
from tests.support.topology import Host, in_netns, poll

pytestmark = pytest.mark.netns

VXLAN = {"CALICO_NETWORKING_BACKEND": "vxlan"}


def ready(host: Host) -> bool:
    with in_netns(host.ns):
        try:
            with urllib.request.urlopen("http://127.0.0.1:9099/readiness", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False


def block_of(ip: str) -> str:
    return str(ipaddress.ip_network(f"{ip}/26", strict=False))


def test_kill_9_agent_under_traffic_loses_no_ping_and_resyncs_cleanly(etcd_cluster, etcd, unique):
    with running_cluster(etcd_cluster, etcd, unique, [2], env=VXLAN) as cl:
        cl.create_pool("10.250.0.0/16", vxlan="Always")
        cl.start(bird=False)
        a, b = cl.hosts
        pa, pb = cl.add_pod(a, "x"), cl.add_pod(b, "y")
        ping_until(pa, pb.ip)
        poll(lambda: ready(a) and ready(b), 15, what="agents ready")
        with background_ping(pa, pb.ip, interval=0.02, count=400) as pinger:
            ping_until(pb, pa.ip)
            for host in (a, b):
                host.kill("agent")
                assert not ready(host)
            for host in (a, b):
                (host.dir / "agent.log").write_text("")  # only the restarted agent's log from here
                host.start_agent()
            poll(lambda: ready(a) and ready(b), 20, what="restarted agents ready")
            assert pinger.poll() is None, "the pings ended before the agents were back: the window is too short"
        sent, received = ping_summary(pinger)
        assert sent == 400 and received == sent, f"{sent - received} of {sent} pings lost"
        for host in (a, b):
            log = host.log("agent")
            assert "in sync: first dataplane apply done" in log
            assert "dataplane: +" not in log, f"restart changed the dataplane:\n{log}"


@pytest.mark.parametrize("mode", ["bgp", "vxlan"])
def test_removed_node_routes_vanish_from_the_others(etcd_cluster, etcd, unique, mode):
    env = VXLAN if mode == "vxlan" else {}
    with running_cluster(etcd_cluster, etcd, unique, [3], env=env) as cl:
        cl.create_pool("10.251.0.0/16", vxlan="Always" if mode == "vxlan" else "Never")
        cl.start(bird=mode == "bgp")
        pods = [cl.add_pod(h, "p") for h in cl.hosts]
        a, b, c = cl.hosts
        gone = block_of(pods[2].ip)
        c_node = cl.store.must_get(Node, c.name)
        via = c.addr if mode == "bgp" else c_node.vxlan_tunnel_addr
        for h in (a, b):
            poll(lambda h=h: f"{gone} via {via}" in h.routes(), 20, what=f"{h.name} has {c.name}'s block")
        ping_until(pods[0], pods[2].ip)
        for name in ("agent", "confd", "bird"):  # del-node stops the services first
            c.stop(name)
        a.ctl("delete", "node", c.name)
        for h in (a, b):
            poll(lambda h=h: gone not in h.routes() and f"via {via} " not in h.routes(), 20,
                 what=f"{c.name}'s routes gone from {h.name}")
        ping_until(pods[0], pods[1].ip)  # the others are untouched
        if mode == "bgp":
            assert "Mesh_" + c.addr.replace(".", "_") not in (a.bird_dir / "bird.conf").read_text()
        else:
            for h in (a, b):
                assert c_node.vxlan_tunnel_addr not in h.run("ip", "neigh", "show", "dev", "vxlan.calico").stdout
                assert c.addr not in h.run("bridge", "fdb", "show", "dev", "vxlan.calico").stdout
        assert a.ctl("get", "node", c.name, check=False).returncode == 4


def test_etcd_down_30s_traffic_continues_and_agent_reconverges(etcd_cluster, etcd, unique):
    with running_cluster(etcd_cluster, etcd, unique, [2], env=VXLAN) as cl:
        cl.create_pool("10.252.0.0/16", vxlan="Always")
        cl.start(bird=False)
        a, b = cl.hosts
        pa, pb = cl.add_pod(a, "x"), cl.add_pod(b, "y")
        ping_until(pa, pb.ip)
        poll(lambda: ready(a) and ready(b), 15, what="agents ready")
        with background_ping(pa, pb.ip, interval=0.1) as pinger:
            etcd_cluster.stop_member(0)
            try:
                outage_end = time.monotonic() + 30
                while time.monotonic() < outage_end:  # the fault lasts 30 s; the agents must stay up
                    assert a.procs["agent"].poll() is None and b.procs["agent"].poll() is None
                    time.sleep(1)
            finally:
                etcd_cluster.restart_member(0)
            # the agents' watches resume: a pod in a new pool (a new block on b) becomes reachable from a
            # (the test's own client may hold a kept-alive connection etcd closed: retry it)
            poll(lambda: cl.create_pool("10.253.0.0/16", name="second", vxlan="Always"), 10,
                 what="etcd writable again")
            pb2 = cl.add_pod(b, "z", pools=["second"])
            ping_until(pa, pb2.ip, timeout=30)
        sent, received = ping_summary(pinger)
        assert sent > 200 and received == sent, f"{sent - received} of {sent} pings lost during the outage"
        poll(lambda: ready(a) and ready(b), 20, what="agents ready after the outage")
