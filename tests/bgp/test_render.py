"""confd rendering: peers, names, AS, filters — and BIRD itself accepts every config."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pycalico.bgp import bird
from pycalico.bgp import config as bc
from pycalico.model import BGPConfiguration, BGPPeer, IPPool, Node


def node(name: str, ip: str, **bgp: object) -> Node:
    labels = bgp.pop("labels", None)
    return Node(name, {"bgp": {"ipv4Address": ip, **bgp}}, metadata={"labels": labels} if labels else None)


@pytest.fixture
def nodes() -> dict[str, Node]:
    return {n.name: n for n in (node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24"), node("c", "10.0.0.3/24"))}


POOLS = [IPPool("p", {"cidr": "10.244.0.0/16"})]


def check_with_bird(text: str, tmp_path) -> None:
    if shutil.which("bird") is None:
        pytest.skip("bird not installed")
    path = tmp_path / "bird.conf"
    path.write_text(text)
    assert bird.check_config(str(path)) is None, text


def test_mesh_has_one_peer_per_other_node_named_like_calico(nodes, tmp_path):
    cfg = bc.compute("b", nodes, None, [], POOLS, ["10.244.1.0/26"], uplink="eth0")
    assert [p.name for p in cfg.peers] == ["Mesh_10_0_0_1", "Mesh_10_0_0_3"]
    assert cfg.asn == 64512 and cfg.router_id == "10.0.0.2"
    # the lower IP is passive towards the higher: exactly one side connects
    assert [p.passive for p in cfg.peers] == [False, True]
    text = bc.render(cfg)
    assert "router id 10.0.0.2;" in text
    assert "neighbor 10.0.0.1 as 64512;" in text and "local 10.0.0.2 as 64512;" in text
    assert 'interface "eth0";' in text
    assert "route 10.244.1.0/26 blackhole;" in text
    check_with_bird(text, tmp_path)


def test_mesh_disabled_leaves_only_explicit_peers(nodes, tmp_path):
    bgp = BGPConfiguration("default", {"nodeToNodeMeshEnabled": False, "asNumber": 65001})
    peers = [BGPPeer("ext", {"peerIP": "10.0.0.100", "asNumber": 65000}),
             BGPPeer("only-c", {"node": "c", "peerIP": "10.0.0.101:1179", "asNumber": 65002})]
    cfg = bc.compute("a", nodes, bgp, peers, POOLS, [], uplink="eth0")
    assert [(p.name, p.asn) for p in cfg.peers] == [("Global_10_0_0_100", 65000)]
    assert cfg.asn == 65001
    cfg_c = bc.compute("c", nodes, bgp, peers, POOLS, [])
    assert sorted(p.name for p in cfg_c.peers) == ["Global_10_0_0_100", "Node_10_0_0_101_port_1179"]
    text = bc.render(cfg_c)
    assert "neighbor 10.0.0.101 port 1179 as 65002;" in text
    check_with_bird(text, tmp_path)


def test_listen_port_applies_to_us_and_to_every_node_peer(nodes, tmp_path):
    bgp = BGPConfiguration("default", {"listenPort": 1790})
    cfg = bc.compute("a", nodes, bgp, [BGPPeer("tor", {"peerIP": "10.0.0.254", "asNumber": 65000})], POOLS, [])
    assert [p.name for p in cfg.peers] == ["Mesh_10_0_0_2_port_1790", "Mesh_10_0_0_3_port_1790", "Global_10_0_0_254"]
    text = bc.render(cfg)
    assert "local 10.0.0.1 port 1790 as 64512;" in text and "neighbor 10.0.0.2 port 1790 as 64512;" in text
    assert "neighbor 10.0.0.254 as 65000;" in text  # an external router keeps its own port
    check_with_bird(text, tmp_path)


def test_peer_session_options(nodes, tmp_path):
    bgp = BGPConfiguration("default", {"nodeMeshMaxRestartTime": "2m"})
    peers = [BGPPeer("tor", {"peerIP": "10.0.0.254", "asNumber": 65000, "maxRestartTime": "300s",
                             "numAllowedLocalASNumbers": 2, "ttlSecurity": 1, "nextHopMode": "Self"}),
             BGPPeer("ibgp", {"peerIP": "10.0.0.253", "keepOriginalNextHop": True})]
    cfg = bc.compute("a", nodes, bgp, peers, POOLS, [])
    text = bc.render(cfg)
    tor = text.split("protocol bgp Global_10_0_0_254")[1].split("\n}")[0]
    assert "graceful restart time 300;" in tor and "allow local as 2;" in tor
    assert "ttl security on;" in tor and "multihop 1;" in tor and "next hop self;" in tor
    ibgp = text.split("protocol bgp Global_10_0_0_253")[1].split("\n}")[0]
    assert "multihop;" in ibgp and "next hop keep;" in ibgp
    mesh = text.split("protocol bgp Mesh_10_0_0_2")[1].split("\n}")[0]
    assert "graceful restart time 120;" in mesh
    check_with_bird(text, tmp_path)


def test_node_as_overrides_global(nodes):
    nodes["a"] = node("a", "10.0.0.1/24", asNumber=65100)
    cfg = bc.compute("a", nodes, None, [], POOLS, [])
    assert cfg.asn == 65100
    cfg_b = bc.compute("b", nodes, None, [], POOLS, [])
    assert {p.ip: p.asn for p in cfg_b.peers}["10.0.0.1"] == 65100


def test_route_reflector_topology(tmp_path):
    nodes = {n.name: n for n in (
        node("rr1", "10.0.0.9/24", routeReflectorClusterID="244.0.0.1", labels={"route-reflector": "true"}),
        node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24"))}
    bgp = BGPConfiguration("default", {"nodeToNodeMeshEnabled": False})
    peers = [BGPPeer("to-rr", {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"})]
    client = bc.compute("a", nodes, bgp, peers, POOLS, [])
    assert [(p.name, p.rr_client) for p in client.peers] == [("Node_10_0_0_9", False)]
    rr = bc.compute("rr1", nodes, bgp, peers, POOLS, [])
    assert [(p.ip, p.rr_client) for p in rr.peers] == [("10.0.0.1", True), ("10.0.0.2", True)]
    text = bc.render(rr)
    assert text.count("rr client;") == 2 and "rr cluster id 244.0.0.1;" in text
    check_with_bird(text, tmp_path)


def test_mesh_skips_route_reflectors_even_when_enabled():
    nodes = {n.name: n for n in (node("rr1", "10.0.0.9/24", routeReflectorClusterID="244.0.0.1"),
                                 node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24"))}
    assert [p.ip for p in bc.compute("a", nodes, None, [], POOLS, []).peers] == ["10.0.0.2"]
    assert bc.compute("rr1", nodes, None, [], POOLS, []).peers == []


def test_kernel_gets_only_unencapsulated_pools_and_never_the_default_route(nodes, tmp_path):
    pools = [IPPool("plain", {"cidr": "10.244.0.0/16"}), IPPool("vx", {"cidr": "10.245.0.0/16", "vxlanMode": "Always"}),
             IPPool("ipip", {"cidr": "10.246.0.0/16", "ipipMode": "CrossSubnet"}),
             IPPool("quiet", {"cidr": "10.247.0.0/16", "disableBGPExport": True})]
    cfg = bc.compute("a", nodes, None, [], pools, ["10.244.0.0/26", "10.245.0.0/26", "10.99.0.0/26"])
    rules = {r.cidr: (r.to_kernel, r.export) for r in cfg.pools}
    assert rules == {"10.244.0.0/16": (True, True), "10.245.0.0/16": (False, True),
                     "10.246.0.0/16": (False, True), "10.247.0.0/16": (True, False)}
    assert cfg.blocks == ["10.244.0.0/26", "10.245.0.0/26"]  # a block outside every pool is not announced
    text = bc.render(cfg)
    kernel = text.split("filter calico_kernel_programming")[1].split("}")[0]
    assert "if net.len = 0 then reject;" in kernel
    assert "if net ~ 10.245.0.0/16 then reject;" in kernel
    assert kernel.strip().endswith("reject;")
    export = text.split("filter calico_export_to_bgp_peers")[1].split("}")[0]
    assert "if net ~ 10.247.0.0/16 then reject;" in export
    check_with_bird(text, tmp_path)


def test_service_ranges_are_announced_but_never_programmed(nodes, tmp_path):
    bgp = BGPConfiguration("default", {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}],
                                       "serviceExternalIPs": [{"cidr": "192.0.2.0/24"}, {"cidr": "fd00::/64"}],
                                       "ignoredInterfaces": ["docker*"]})
    cfg = bc.compute("a", nodes, bgp, [], POOLS, [])
    assert cfg.service_cidrs == ["10.96.0.0/12", "192.0.2.0/24"]
    text = bc.render(cfg)
    assert "route 10.96.0.0/12 blackhole;" in text and 'if proto = "calico_services" then accept;' in text
    kernel = text.split("filter calico_kernel_programming")[1].split("}")[0]
    assert "if net ~ 10.96.0.0/12 then reject;" in kernel
    assert '-"docker*"' in text  # no uplink known: Calico's interface pattern plus the ignored ones
    check_with_bird(text, tmp_path)


def test_no_config_until_the_node_has_an_address():
    assert bc.compute("a", {"a": Node("a", {})}, None, [], POOLS, []) is None
    assert bc.compute("ghost", {}, None, [], POOLS, []) is None


def test_router_id_override():
    n = node("a", "10.0.0.1/24")
    assert bc.router_id(n, "192.0.2.7") == "192.0.2.7"
    hashed = bc.router_id(n, "hash")
    assert hashed == bc.router_id(n, "hash") and hashed != "10.0.0.1"


def test_broken_config_is_reported_by_bird_check(tmp_path):
    if shutil.which("bird") is None:
        pytest.skip("bird not installed")
    path = tmp_path / "bad.conf"
    path.write_text("protocol bgp rr { }\n")  # 'rr' is a reserved word
    assert bird.check_config(str(path))


def test_show_protocols_parser_against_a_real_bird(tmp_path):
    if shutil.which("bird") is None:
        pytest.skip("bird not installed")
    nodes = {"a": node("a", "127.0.0.1/8"), "b": node("b", "127.0.0.2/8")}
    cfg = bc.compute("a", nodes, None, [BGPPeer("g", {"peerIP": "127.0.0.3", "asNumber": 65000})], POOLS, [])
    conf = tmp_path / "bird.conf"
    conf.write_text(bc.render(cfg))
    ctl = tmp_path / "bird.ctl"
    proc = subprocess.Popen(["unshare", "-n", "bird", "-f", "-c", str(conf), "-s", str(ctl)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from tests.support.topology import poll

        poll(ctl.exists, 10, what="bird control socket")
        peers = poll(lambda: bird.bgp_peers(str(ctl)), 10, what="protocols")
        assert {(p["peer"], p["type"]) for p in peers} == {("127.0.0.2", "node-to-node mesh"),
                                                           ("127.0.0.3", "global")}
        assert all(p["since"] for p in peers)
    finally:
        proc.terminate()
        proc.wait(10)
