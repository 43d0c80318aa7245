"""The dataplane layer against a real kernel (one namespace, no etcd): devices, routes,
neighbours, FDB; incremental applies write only differences, full applies repair drift;
foreign routes are never touched."""

from __future__ import annotations

import uuid

import pytest

from pycalico.agent import dataplane
from pycalico.agent.calc import Desired, Route, VxlanDevice
from pycalico.agent.dataplane import Dataplane
from tests.support.topology import in_netns, nsexec, poll, sh

pytestmark = pytest.mark.netns


@pytest.fixture
def netns():
    name = f"tdp{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        nsexec(name, "ip", "link", "set", "lo", "up")
        nsexec(name, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        nsexec(name, "ip", "addr", "add", "10.9.0.1/24", "dev", "eth0")
        nsexec(name, "ip", "link", "set", "eth0", "up")
        nsexec(name, "ip", "link", "set", "eth1", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def desired(peers: int) -> Desired:
    d = Desired(vxlan=VxlanDevice(4096, 4789, "10.9.0.1", "eth0", "66:00:00:00:00:01", "10.244.0.1", 1450))
    d.routes["10.244.0.0/26"] = Route("10.244.0.0/26", "blackhole")
    for i in range(1, peers + 1):
        tunnel = f"10.244.{i}.1"
        mac = f"66:00:00:00:00:{i + 1:02x}"
        d.routes[f"10.244.{i}.0/26"] = Route(f"10.244.{i}.0/26", via=tunnel, dev="vxlan.calico", onlink=True)
        d.vxlan_neighbours[tunnel] = mac
        d.vxlan_fdb[mac] = f"10.9.0.{i + 1}"
    return d


def state(ns: str) -> tuple[str, str, str]:
    return (nsexec(ns, "ip", "-4", "route", "show", "proto", "80").stdout,
            nsexec(ns, "ip", "neigh", "show", "dev", "vxlan.calico").stdout,
            nsexec(ns, "bridge", "fdb", "show", "dev", "vxlan.calico").stdout)


def test_full_then_incremental_then_drift_repair(netns):
    dp = Dataplane(80)
    nsexec(netns, "ip", "route", "add", "192.0.2.0/24", "via", "10.9.0.254", "proto", "static")
    with in_netns(netns):
        stats = dp.apply(desired(3), full=True)
    assert not stats.errors and stats.routes_added == 4 and stats.neigh_changed == 3 and stats.fdb_changed == 3
    routes, neigh, fdb = state(netns)
    assert "blackhole 10.244.0.0/26" in routes and "10.244.3.0/26 via 10.244.3.1 dev vxlan.calico onlink" in routes
    assert "10.244.2.1 lladdr 66:00:00:00:00:03 PERMANENT" in neigh
    assert "66:00:00:00:00:04 dst 10.9.0.4 self permanent" in fdb
    link = nsexec(netns, "ip", "-d", "addr", "show", "vxlan.calico").stdout
    assert "vxlan id 4096" in link and "10.244.0.1/32" in link and "mtu 1450" in link

    # a peer goes away: the incremental apply removes exactly its three entries
    with in_netns(netns):
        stats = dp.apply(desired(2), full=False)
    assert (stats.routes_added, stats.routes_removed, stats.neigh_changed, stats.fdb_changed) == (0, 1, 1, 1)
    routes, neigh, fdb = state(netns)
    assert "10.244.3.0/26" not in routes and "10.244.3.1" not in neigh and "66:00:00:00:00:04" not in fdb

    # drift: an incremental apply trusts its cache, the full one reads the kernel and repairs
    nsexec(netns, "ip", "route", "del", "10.244.2.0/26")
    nsexec(netns, "ip", "neigh", "del", "10.244.1.1", "dev", "vxlan.calico")
    with in_netns(netns):
        assert dp.apply(desired(2), full=False).changes == 0
        stats = dp.apply(desired(2), full=True)
    assert stats.routes_added == 1 and stats.neigh_changed == 1
    routes, neigh, _ = state(netns)
    assert "10.244.2.0/26 via 10.244.2.1" in routes and "10.244.1.1 lladdr" in neigh
    assert "192.0.2.0/24 via 10.9.0.254" in nsexec(netns, "ip", "route").stdout  # never ours to touch

    # the device itself is removed: recreated with its address, neighbours and FDB
    nsexec(netns, "ip", "link", "del", "vxlan.calico")
    with in_netns(netns):
        stats = dp.apply(desired(2), full=True)
    assert not stats.errors and stats.devices_changed >= 1
    routes, neigh, fdb = state(netns)
    assert routes.count("dev vxlan.calico") == 2 and neigh.count("PERMANENT") == 2 and fdb.count("permanent") == 2

    # VXLAN switched off: device and routes go, the blackhole and the foreign route stay
    off = Desired(routes={"10.244.0.0/26": Route("10.244.0.0/26", "blackhole")})
    with in_netns(netns):
        stats = dp.apply(off, full=False)
    assert "vxlan.calico" not in nsexec(netns, "ip", "link").stdout
    assert nsexec(netns, "ip", "-4", "route", "show", "proto", "80").stdout.strip() == "blackhole 10.244.0.0/26"
    assert "192.0.2.0/24" in nsexec(netns, "ip", "route").stdout


def test_missing_workload_route_is_restored_only_when_its_device_exists(netns):
    nsexec(netns, "ip", "link", "add", "cali0123456789a", "type", "veth", "peer", "name", "p0")
    nsexec(netns, "ip", "link", "set", "cali0123456789a", "up")
    d = Desired(workload_routes={
        "10.244.0.5/32": Route("10.244.0.5/32", dev="cali0123456789a", scope_link=True),
        "10.244.0.6/32": Route("10.244.0.6/32", dev="caligone", scope_link=True),
    })
    dp = Dataplane(80)
    with in_netns(netns):
        dp.apply(d, full=True)
    routes = nsexec(netns, "ip", "route").stdout
    assert "10.244.0.5 dev cali0123456789a proto 80 scope link" in routes and "10.244.0.6" not in routes
    # the CNI plugin's own route (another protocol) is left as it is
    nsexec(netns, "ip", "route", "replace", "10.244.0.5/32", "dev", "cali0123456789a", "proto", "boot",
           "scope", "link")
    with in_netns(netns):
        dp.apply(d, full=True)
    line = next(x for x in nsexec(netns, "ip", "route").stdout.splitlines() if x.startswith("10.244.0.5 "))
    assert "proto 80" not in line  # `ip` does not print proto boot


def test_an_awaited_prefix_keeps_its_route_until_the_new_one_can_be_built(netns):
    """A pool switched IPIP → VXLAN: the peer's VXLAN tunnel address is not known yet, so its
    prefix is awaited. The route the agent had for it stays through incremental and full applies
    (no gap), is replaced once the new route is built, and goes when the prefix is gone."""
    dp = Dataplane(80)
    dst = "10.244.1.0/26"
    old = Desired(routes={dst: Route(dst, via="10.9.0.2", dev="eth0", onlink=True)})
    waiting = desired(0)
    waiting.awaiting.add(dst)
    with in_netns(netns):
        assert not dp.apply(old, full=True).errors
        for full in (False, True):
            stats = dp.apply(waiting, full=full)
            assert not stats.errors and stats.routes_removed == 0
            assert f"{dst} via 10.9.0.2 dev eth0 onlink" in state(netns)[0]
        stats = dp.apply(desired(1), full=False)
    assert stats.routes_added == 1 and stats.routes_removed == 0
    assert f"{dst} via 10.244.1.1 dev vxlan.calico onlink" in state(netns)[0]
    with in_netns(netns):
        dp.apply(waiting, full=False)  # awaited again: the built route stays too
        assert f"{dst} via 10.244.1.1 dev vxlan.calico onlink" in state(netns)[0]
        assert dp.apply(desired(0), full=False).routes_removed == 1
    assert dst not in state(netns)[0]



def test_vxlan_to_ipip_keeps_the_device_while_a_route_through_it_is_awaited(netns, monkeypatch):
    """The pool switched VXLAN → IPIP and the peer's IPIP address is not known yet: the VXLAN
    route stays and so do vxlan.calico, its neighbour and FDB entry (peers still send VXLAN). Once
    the new route is in, the device stays HANDOVER_DEVICE_GRACE longer, then goes. (A direct route
    stands in for the tunl0 route: this kernel has no ipip.)"""
    monkeypatch.setattr(dataplane, "HANDOVER_DEVICE_GRACE", 3.0)
    dp = Dataplane(80)
    dst = "10.244.1.0/26"
    switched = Desired(routes={"10.244.0.0/26": Route("10.244.0.0/26", "blackhole")})
    switched.awaiting.add(dst)
    new = Desired(routes={**switched.routes, dst: Route(dst, via="10.9.0.2", dev="eth0", onlink=True)})
    with in_netns(netns):
        assert not dp.apply(desired(1), full=True).errors
        for full in (False, True):
            assert not dp.apply(switched, full=full).errors
            routes, neigh, fdb = state(netns)
            assert f"{dst} via 10.244.1.1 dev vxlan.calico onlink" in routes
            assert "10.244.1.1 lladdr" in neigh and "dst 10.9.0.2" in fdb
        assert not dp.apply(new, full=False).errors
        assert f"{dst} via 10.9.0.2 dev eth0 onlink" in state(netns)[0]
        assert "vxlan.calico" in nsexec(netns, "ip", "link").stdout and dp.holding  # the grace
        poll(lambda: not dp.holding, 10, what="the grace to pass")
        assert not dp.apply(new, full=False).errors
    assert "vxlan.calico" not in nsexec(netns, "ip", "link").stdout
    assert f"{dst} via 10.9.0.2 dev eth0 onlink" in nsexec(netns, "ip", "-4", "route", "show", "proto", "80").stdout
