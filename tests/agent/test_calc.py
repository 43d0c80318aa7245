"""The dataplane the agent computes, mode by mode (IPIP is proven here: this kernel has no ipip)."""

from __future__ import annotations

import ipaddress

from pycalico.agent import calc
from pycalico.agent.calc import Block, Route
from pycalico.model import IPPool, Node, WorkloadEndpoint


def node(name: str, ip: str, **spec: str) -> Node:
    bgp = {"ipv4Address": ip}
    if "ipip" in spec:
        bgp["ipv4IPIPTunnelAddr"] = spec.pop("ipip")
    body: dict = {"bgp": bgp}
    if "vxlan" in spec:
        body["ipv4VXLANTunnelAddr"] = spec.pop("vxlan")
    return Node(name, body)


def blocks(*pairs: tuple[str, str | None]) -> list[Block]:
    return [Block(ipaddress.IPv4Network(c), h) for c, h in pairs]


NODES = {n.name: n for n in (
    node("a", "10.0.0.1/24", ipip="10.244.0.1", vxlan="10.244.0.2"),
    node("b", "10.0.0.2/24", ipip="10.244.1.1", vxlan="10.244.1.2"),
    node("c", "10.0.1.3/24", ipip="10.244.2.1", vxlan="10.244.2.2"),  # another subnet
)}
BLOCKS = blocks(("10.244.0.0/26", "a"), ("10.244.1.0/26", "b"), ("10.244.2.0/26", "c"), ("10.244.3.0/26", None))


def pool(**spec) -> IPPool:
    return IPPool("p", {"cidr": "10.244.0.0/16", **spec})


def test_ipip_always_routes_every_remote_block_through_tunl0_onlink():
    d = calc.compute("a", NODES, [pool(ipipMode="Always")], BLOCKS)
    assert d.routes == {
        "10.244.0.0/26": Route("10.244.0.0/26", "blackhole"),
        "10.244.1.0/26": Route("10.244.1.0/26", via="10.0.0.2", dev="tunl0", onlink=True),
        "10.244.2.0/26": Route("10.244.2.0/26", via="10.0.1.3", dev="tunl0", onlink=True),
    }
    assert d.ipip == calc.IpipDevice("10.244.0.1", 1480)
    assert d.vxlan is None
    assert d.routes["10.244.1.0/26"].ip_args() == ["10.244.1.0/26", "via", "10.0.0.2", "dev", "tunl0", "onlink"]


def test_ipip_cross_subnet_encapsulates_only_off_subnet_peers():
    d = calc.compute("a", NODES, [pool(ipipMode="CrossSubnet")], BLOCKS, parent="eth0")
    assert d.routes["10.244.1.0/26"] == Route("10.244.1.0/26", via="10.0.0.2", dev="eth0", onlink=True)
    assert d.routes["10.244.2.0/26"] == Route("10.244.2.0/26", via="10.0.1.3", dev="tunl0", onlink=True)


def test_ipip_without_a_tunnel_address_programs_no_tunnel_routes():
    nodes = dict(NODES, a=node("a", "10.0.0.1/24"))
    d = calc.compute("a", nodes, [pool(ipipMode="Always")], BLOCKS)
    assert d.ipip is None
    assert set(d.routes) == {"10.244.0.0/26"}
    assert d.awaiting == {"10.244.1.0/26", "10.244.2.0/26"}  # whatever route they have stays


def test_a_peer_without_a_tunnel_address_for_the_new_mode_is_awaited_not_dropped():
    """Just after a pool switches IPIP → VXLAN, peer c's VXLAN tunnel address is not in its Node
    yet: its block gets no VXLAN route and is awaited (the old route stays); b's is built; a
    CrossSubnet peer in this subnet is routed directly and never awaited."""
    nodes = dict(NODES, c=node("c", "10.0.1.3/24", ipip="10.244.2.1"))
    d = calc.compute("a", nodes, [pool(vxlanMode="Always")], BLOCKS, parent="eth0")
    assert "10.244.2.0/26" not in d.routes and d.awaiting == {"10.244.2.0/26"}
    assert d.routes["10.244.1.0/26"].dev == "vxlan.calico"
    d = calc.compute("a", dict(nodes, b=node("b", "10.0.0.2/24")), [pool(vxlanMode="CrossSubnet")], BLOCKS,
                     parent="eth0")
    assert d.routes["10.244.1.0/26"] == Route("10.244.1.0/26", via="10.0.0.2", dev="eth0", onlink=True)
    assert d.awaiting == {"10.244.2.0/26"}
    assert not calc.compute("a", NODES, [pool()], BLOCKS, backend="bird").awaiting  # BIRD's pools: never


def test_vxlan_always_gives_routes_neighbours_and_fdb_per_peer():
    d = calc.compute("a", NODES, [pool(vxlanMode="Always")], BLOCKS, parent="eth0", host_mtu=1500)
    assert d.vxlan == calc.VxlanDevice(4096, 4789, "10.0.0.1", "eth0", calc.vxlan_mac("a"), "10.244.0.2", 1450)
    assert d.routes["10.244.1.0/26"] == Route("10.244.1.0/26", via="10.244.1.2", dev="vxlan.calico", onlink=True)
    assert d.routes["10.244.2.0/26"] == Route("10.244.2.0/26", via="10.244.2.2", dev="vxlan.calico", onlink=True)
    assert d.vxlan_neighbours == {"10.244.1.2": calc.vxlan_mac("b"), "10.244.2.2": calc.vxlan_mac("c")}
    assert d.vxlan_fdb == {calc.vxlan_mac("b"): "10.0.0.2", calc.vxlan_mac("c"): "10.0.1.3"}


def test_vxlan_cross_subnet_routes_same_subnet_peers_directly():
    d = calc.compute("a", NODES, [pool(vxlanMode="CrossSubnet")], BLOCKS, parent="eth0")
    assert d.routes["10.244.1.0/26"] == Route("10.244.1.0/26", via="10.0.0.2", dev="eth0", onlink=True)
    assert d.routes["10.244.2.0/26"].dev == "vxlan.calico"


def test_unencapsulated_pool_is_left_to_bird_unless_there_is_no_bgp():
    d = calc.compute("a", NODES, [pool()], BLOCKS, backend="bird")
    assert set(d.routes) == {"10.244.0.0/26"}
    d = calc.compute("a", NODES, [pool()], BLOCKS, backend="none", parent="eth0")
    assert d.routes["10.244.1.0/26"] == Route("10.244.1.0/26", via="10.0.0.2", dev="eth0", onlink=True)
    assert "10.244.2.0/26" not in d.routes  # not on our subnet, and no BGP to reach it
    # Flannel's host-gw refuses such a node with a reason the agent reports
    assert list(d.unroutable) == ["c"] and "outside this node's subnet 10.0.0.0/24" in d.unroutable["c"]
    assert calc.compute("a", NODES, [pool()], BLOCKS, backend="bird").unroutable == {}


def test_vxlan_mac_is_felix_deterministic():
    mac = calc.vxlan_mac("node-1")
    assert mac.startswith("66:") and len(mac) == 17 and mac == calc.vxlan_mac("node-1") != calc.vxlan_mac("node-2")
    assert calc.node_vtep_mac(Node("x", {"vxlanTunnelMACAddr": "66:AA:BB:CC:DD:EE"})) == "66:aa:bb:cc:dd:ee"


def test_blocks_outside_pools_or_of_unknown_nodes_are_ignored():
    extra = blocks(("10.99.0.0/26", "b"), ("10.244.9.0/26", "ghost"), ("10.244.0.64/32", "a"))
    d = calc.compute("a", NODES, [pool(vxlanMode="Always")], BLOCKS + extra)
    assert "10.99.0.0/26" not in d.routes and "10.244.9.0/26" not in d.routes
    assert "10.244.0.64/32" not in d.routes  # no blackhole for a /32 block


def test_local_workload_routes_and_nat_pools():
    wep = WorkloadEndpoint("a-k8s-web-eth0", {"node": "a", "ipNetworks": ["10.244.0.5/32"],
                                              "interfaceName": "cali123"}, namespace="default")
    other = WorkloadEndpoint("b-k8s-web-eth0", {"node": "b", "ipNetworks": ["10.244.1.5/32"],
                                                "interfaceName": "cali456"}, namespace="default")
    pools = [pool(natOutgoing=True), IPPool("q", {"cidr": "10.250.0.0/16"})]
    d = calc.compute("a", NODES, pools, BLOCKS, [wep, other])
    assert d.workload_routes == {"10.244.0.5/32": Route("10.244.0.5/32", dev="cali123", scope_link=True)}
    assert d.nat_pools == ["10.244.0.0/16"]
    assert d.all_pools == ["10.244.0.0/16", "10.250.0.0/16"]


def test_pod_mtu_subtracts_the_encapsulation():
    assert calc.pod_mtu(1500, [pool(ipipMode="Always")]) == 1480
    assert calc.pod_mtu(1500, [pool(vxlanMode="CrossSubnet")]) == 1450
    assert calc.pod_mtu(1500, [pool()]) == 1500
    assert calc.pod_mtu(1500, [pool(vxlanMode="Always")], override=1400) == 1400


def test_borrowed_addresses_get_a_host_route_towards_their_node():
    from pycalico.ipam import AllocationBlock

    raw = AllocationBlock.new("10.244.1.0/26", "host:b")
    raw.assign(1, "pod-on-b", {"node": "b"})
    raw.assign(1, "pod-on-c", {"node": "c"})  # c borrowed 10.244.1.1 from b's block
    block = Block.from_json(raw.to_json())
    assert block.borrowed == (("10.244.1.1", "c"),)
    d = calc.compute("a", NODES, [pool(vxlanMode="Always")], [block])
    assert d.routes["10.244.1.0/26"].via == "10.244.1.2"  # b's VTEP
    assert d.routes["10.244.1.1/32"] == Route("10.244.1.1/32", via="10.244.2.2", dev="vxlan.calico", onlink=True)
    d_c = calc.compute("c", NODES, [pool(vxlanMode="Always")], [block])
    assert "10.244.1.1/32" not in d_c.routes  # c's own workload: the CNI plugin's /32


def test_felix_configuration_precedence_and_effect():
    p = calc.FelixParams.merge({"FELIX_VXLANPORT": "8472"}, {"vxlanVNI": 7, "vxlanPort": 1},
                               {"vxlanVNI": 9, "vxlanMTU": 1400, "routeRefreshInterval": "1m30s", "ipipMTU": "bad"})
    assert (p.vxlan_vni, p.vxlan_port, p.vxlan_mtu, p.ipip_mtu, p.route_refresh_interval) == (7, 8472, 1400, 0, 90.0)
    d = calc.compute("a", NODES, [pool(vxlanMode="Always")], BLOCKS, felix=p)
    assert (d.vxlan.vni, d.vxlan.port, d.vxlan.mtu) == (7, 8472, 1400)
    assert calc.pod_mtu(1500, [pool(vxlanMode="Always")], felix=p) == 1400
    assert calc.pod_mtu(9000, [pool(ipipMode="Always")], felix=calc.FelixParams(ipip_mtu=8000)) == 8000
    assert calc._duration("500ms") == 0.5 and calc._duration(30) == 30.0 and calc._duration("2h") == 7200


def test_block_from_ipam_json():
    assert Block.from_json({"cidr": "10.244.1.0/26", "affinity": "host:b"}) == Block(
        ipaddress.IPv4Network("10.244.1.0/26"), "b")
    assert Block.from_json({"cidr": "10.244.1.0/26", "affinity": None}).host is None
    assert Block.from_json({"cidr": "fd00::/122", "affinity": "host:b"}) is None
