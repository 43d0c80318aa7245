"""IP autodetection methods and settings parsing."""

from __future__ import annotations

import ipaddress

import pytest

from pycalico.agent import autodetect
from pycalico.agent.autodetect import Interface
from pycalico.agent.settings import AgentSettings, mode
from pycalico.agent.startup import determine_address
from pycalico.errors import ValidationError


def iface(name: str, *addrs: str, mtu: int = 1500) -> Interface:
    return Interface(name, tuple(ipaddress.IPv4Interface(a) for a in addrs), mtu)


IFACES = [
    iface("lo", "127.0.0.1/8"),
    iface("docker0", "172.17.0.1/16"),
    iface("cali1234", "169.254.1.1/32"),
    iface("vxlan.calico", "10.244.0.1/32"),
    iface("eth0", "10.0.0.5/24"),
    iface("ens4", "192.168.7.9/24", mtu=9000),
]


def test_first_found_skips_calicos_excluded_interfaces():
    assert autodetect.autodetect("first-found", IFACES) == ipaddress.IPv4Interface("10.0.0.5/24")


def test_interface_regex():
    assert autodetect.autodetect("interface=ens.*", IFACES) == ipaddress.IPv4Interface("192.168.7.9/24")
    assert autodetect.autodetect("interface=nope,ens4", IFACES) == ipaddress.IPv4Interface("192.168.7.9/24")
    assert autodetect.autodetect("interface=eth", IFACES) is None  # a full match, like Go's regexp anchors


def test_skip_interface():
    assert autodetect.autodetect("skip-interface=eth.*", IFACES) == ipaddress.IPv4Interface("192.168.7.9/24")


def test_cidr():
    assert autodetect.autodetect("cidr=192.168.0.0/16", IFACES) == ipaddress.IPv4Interface("192.168.7.9/24")
    assert autodetect.autodetect("cidr=10.9.0.0/16,10.0.0.0/8", IFACES) == ipaddress.IPv4Interface("10.0.0.5/24")


def test_can_reach_uses_the_source_address_of_the_route(monkeypatch):
    monkeypatch.setattr(autodetect, "_can_reach", lambda dest: ipaddress.IPv4Address("192.168.7.9"))
    assert autodetect.autodetect("can-reach=192.168.7.1", IFACES) == ipaddress.IPv4Interface("192.168.7.9/24")


def test_can_reach_loopback_for_real():
    ifaces = [iface("lo", "127.0.0.1/8")]
    assert autodetect._can_reach("127.0.0.1") == ipaddress.IPv4Address("127.0.0.1")
    assert autodetect.autodetect("can-reach=127.0.0.1", ifaces) == ipaddress.IPv4Interface("127.0.0.1/8")


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValidationError, match="IP_AUTODETECTION_METHOD"):
        autodetect.autodetect("kubernetes-magic", IFACES)


def test_host_mtu_is_the_smallest_matching_interface():
    assert autodetect.host_mtu(IFACES) == 1500
    assert autodetect.host_mtu([iface("docker0", "172.17.0.1/16")]) == 1460


def test_explicit_ip_gets_the_prefix_of_its_interface():
    s = AgentSettings("n", ip="192.168.7.9")
    assert determine_address(s, None, IFACES) == ipaddress.IPv4Interface("192.168.7.9/24")
    s = AgentSettings("n", ip="10.1.2.3/16")
    assert determine_address(s, None, IFACES) == ipaddress.IPv4Interface("10.1.2.3/16")


def test_settings_from_environment(tmp_path):
    env = {"PYCALICO_STATE_DIR": str(tmp_path), "CALICO_IPV4POOL_IPIP": "CrossSubnet", "AS": "65010",
           "PYCALICO_NODE_LABELS": "route-reflector=true, zone=a", "CALICO_NETWORKING_BACKEND": "vxlan",
           "HOSTNAME": "Node-1"}
    s = AgentSettings.from_mapping(env)
    assert s.nodename == "node-1" and s.as_number == 65010 and s.backend == "vxlan"
    assert s.labels == {"route-reflector": "true", "zone": "a"}
    (tmp_path / "nodename").write_text("from-file\n")
    assert AgentSettings.from_mapping(env).nodename == "from-file"
    assert AgentSettings.from_mapping(dict(env, NODENAME="explicit")).nodename == "explicit"
    with pytest.raises(ValidationError):
        AgentSettings.from_mapping(dict(env, CALICO_NETWORKING_BACKEND="gre"))


def test_kubeasz_overlay_knob_picks_ipip_under_bird_and_vxlan_otherwise():
    s = AgentSettings.from_mapping({"NODENAME": "n", "CALICO_ENABLE_OVERLAY": "CrossSubnet"})
    assert (s.pool_ipip, s.pool_vxlan) == ("CrossSubnet", "")
    s = AgentSettings.from_mapping({"NODENAME": "n", "CALICO_ENABLE_OVERLAY": "Always",
                                    "CALICO_NETWORKING_BACKEND": "vxlan"})
    assert (s.pool_ipip, s.pool_vxlan) == ("", "Always")
    s = AgentSettings.from_mapping({"NODENAME": "n", "CALICO_ENABLE_OVERLAY": "Always",
                                    "CALICO_IPV4POOL_IPIP": "Never"})
    assert s.pool_ipip == "Never"  # the specific variable wins


def test_pool_mode_spellings():
    assert mode("always") == "Always" and mode("cross-subnet") == "CrossSubnet" and mode("") == "Never"
    assert mode("true") == "Always" and mode("Never") == "Never"
    with pytest.raises(ValidationError):
        mode("sometimes")
