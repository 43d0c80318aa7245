"""The preflight filter: kubeasz variables in, normalised settings out, or an error naming the variable."""

from __future__ import annotations

import importlib

import pytest

GROUPS = {"kube_master": ["192.168.1.1"], "kube_node": ["192.168.1.2", "192.168.1.3"], "etcd": ["192.168.1.1"]}


@pytest.fixture
def f(collections_path):
    return importlib.import_module("ansible_collections.pycalico.network.plugins.filter.network")


def settings(f, groups=GROUPS, **raw):
    return f.network_settings({"CLUSTER_CIDR": "172.20.0.0/16", **raw}, groups)


def test_kube_proxy_modes(f):
    assert settings(f)["proxy_mode"] == "nftables"  # kubeasz's default
    assert settings(f, PROXY_MODE="IPTables")["proxy_mode"] == "iptables"
    assert settings(f, PROXY_MODE="ipvs", pycalico_accept_ipvs_policy_gap="true")["proxy_mode"] == "ipvs"


def test_kubeasz_defaults(f):
    s = settings(f)
    assert s["cluster_name"] == "cluster1"
    assert s["pool_cidr"] == "172.20.0.0/16"
    assert (s["ipip_mode"], s["vxlan_mode"], s["backend"]) == ("Always", "Never", "bird")
    assert (s["block_size"], s["nat_outgoing"], s["as_number"], s["mtu"]) == (26, True, 64512, 0)
    assert s["rr_enabled"] is False and s["rr_nodes"] == []


@pytest.mark.parametrize("raw,expected", [
    ({"CALICO_IPV4POOL_IPIP": "off"}, ("Never", "Never")),
    ({"CALICO_IPV4POOL_IPIP": "Off"}, ("Never", "Never")),
    ({"CALICO_IPV4POOL_IPIP": "crosssubnet"}, ("CrossSubnet", "Never")),
    ({"CALICO_ENABLE_OVERLAY": "CrossSubnet"}, ("CrossSubnet", "Never")),
    ({"CALICO_ENABLE_OVERLAY": "Always", "CALICO_NETWORKING_BACKEND": "vxlan"}, ("Never", "Always")),
    ({"CALICO_NETWORKING_BACKEND": "vxlan"}, ("Never", "Always")),
    ({"CALICO_NETWORKING_BACKEND": "none"}, ("Never", "Never")),
    ({"CALICO_IPV4POOL_IPIP": "Never", "CALICO_IPV4POOL_VXLAN": "CrossSubnet"}, ("Never", "CrossSubnet")),
    ({"CALICO_IPV4POOL_VXLAN": "Always", "CALICO_NETWORKING_BACKEND": "none"}, ("Never", "Always")),
])
def test_overlay_modes(f, raw, expected):
    s = settings(f, **raw)
    assert (s["ipip_mode"], s["vxlan_mode"]) == expected


@pytest.mark.parametrize("raw,expected", [
    ({}, ("vxlan", "Never", "Always")),
    ({"FLANNEL_BACKEND": "vxlan", "DIRECT_ROUTING": "false"}, ("vxlan", "Never", "Always")),
    ({"FLANNEL_BACKEND": "vxlan", "DIRECT_ROUTING": True}, ("vxlan", "Never", "CrossSubnet")),
    ({"FLANNEL_BACKEND": "host-gw"}, ("none", "Never", "Never")),
    # kubeasz's config.yml keeps its CALICO_* defaults when flannel is chosen: they mean nothing then
    ({"FLANNEL_BACKEND": "host-gw", "CALICO_IPV4POOL_IPIP": "Always", "CALICO_NETWORKING_BACKEND": "bird",
      "CALICO_RR_ENABLED": "true"}, ("none", "Never", "Never")),
])
def test_flannel_variables_pick_the_matching_mode(f, raw, expected):
    s = settings(f, CLUSTER_NETWORK="flannel", **raw)
    assert (s["backend"], s["ipip_mode"], s["vxlan_mode"]) == expected
    assert s["cluster_network"] == "flannel" and s["bgp_enabled"] is False and s["rr_enabled"] is False


def test_route_reflectors_default_to_masters_or_calico_rr(f):
    assert settings(f, CALICO_RR_ENABLED="true")["rr_nodes"] == ["192.168.1.1"]
    groups = dict(GROUPS, calico_rr=["192.168.1.9"])
    assert settings(f, groups, CALICO_RR_ENABLED=True)["rr_nodes"] == ["192.168.1.9"]
    assert settings(f, CALICO_RR_ENABLED=True, CALICO_RR_NODES=["192.168.1.2"])["rr_nodes"] == ["192.168.1.2"]
    assert settings(f, CALICO_RR_ENABLED=True, CALICO_RR_NODES="192.168.1.2,192.168.1.3")["rr_nodes"] == [
        "192.168.1.2", "192.168.1.3"]
    # INI [all:vars] values arrive as strings.
    assert settings(f, CALICO_RR_ENABLED="true", CALICO_RR_NODES="[]")["rr_nodes"] == ["192.168.1.1"]
    assert settings(f, CALICO_RR_ENABLED="true", CALICO_RR_NODES="['192.168.1.2', \"192.168.1.3\"]")[
        "rr_nodes"] == ["192.168.1.2", "192.168.1.3"]


@pytest.mark.parametrize("raw,fragments", [
    ({"CLUSTER_CIDR": None}, ["CLUSTER_CIDR: invalid value None (required)"]),
    ({"CLUSTER_CIDR": "172.20.0.0"}, ["CLUSTER_CIDR", "no prefix length"]),
    ({"CLUSTER_CIDR": "172.20.0.300/16"}, ["CLUSTER_CIDR", "not a CIDR"]),
    ({"CLUSTER_CIDR": "172.20.1.0/16"}, ["CLUSTER_CIDR", "host bits set", "172.20.0.0/16"]),
    ({"CLUSTER_CIDR": "fd00::/64"}, ["CLUSTER_CIDR", "IPv6"]),
    ({"CALICO_IPV4POOL_CIDR": "10.0.0.0/16"}, ["CALICO_IPV4POOL_CIDR", "outside CLUSTER_CIDR",
                                               "inside CLUSTER_CIDR 172.20.0.0/16"]),
    ({"CALICO_IPV4POOL_CIDR": "172.20.0.0/8"}, ["CALICO_IPV4POOL_CIDR", "host bits set"]),
    ({"CALICO_IPV4POOL_IPIP": "Sometimes"}, ["CALICO_IPV4POOL_IPIP: invalid value 'Sometimes'",
                                             "Always, CrossSubnet or Never (or off)"]),
    ({"CALICO_IPV4POOL_VXLAN": "off"}, ["CALICO_IPV4POOL_VXLAN", "Always, CrossSubnet or Never"]),
    ({"CALICO_IPV4POOL_IPIP": "Always", "CALICO_IPV4POOL_VXLAN": "Always"},
     ["CALICO_IPV4POOL_IPIP", "IPIP and VXLAN on one pool", "Never while CALICO_IPV4POOL_VXLAN is Always"]),
    ({"CALICO_IPV4POOL_IPIP": "Always", "CALICO_ENABLE_OVERLAY": "Never"},
     ["CALICO_ENABLE_OVERLAY", "contradicts CALICO_IPV4POOL_IPIP"]),
    ({"CALICO_IPV4POOL_IPIP": "Always", "CALICO_NETWORKING_BACKEND": "vxlan"},
     ["CALICO_IPV4POOL_IPIP", "IPIP needs BGP"]),
    ({"CALICO_NETWORKING_BACKEND": "ospf"}, ["CALICO_NETWORKING_BACKEND", "bird, vxlan or none"]),
    ({"CLUSTER_NETWORK": "cilium"}, ["CLUSTER_NETWORK", "calico, or flannel"]),
    ({"CLUSTER_NETWORK": "flannel", "FLANNEL_BACKEND": "udp"}, ["FLANNEL_BACKEND", "vxlan or host-gw",
                                                               "no equivalent of flannel's udp"]),
    ({"CLUSTER_NETWORK": "flannel", "FLANNEL_BACKEND": "host-gw", "DIRECT_ROUTING": "true"},
     ["DIRECT_ROUTING", "false with FLANNEL_BACKEND=host-gw"]),
    ({"CLUSTER_NETWORK": "flannel", "DIRECT_ROUTING": "sometimes"}, ["DIRECT_ROUTING", "true or false"]),
    ({"CLUSTER_NAME": "my cluster"}, ["CLUSTER_NAME"]),
    ({"CALICO_IPV4POOL_BLOCK_SIZE": "33"}, ["CALICO_IPV4POOL_BLOCK_SIZE", "from 20 to 32"]),
    ({"CALICO_IPV4POOL_CIDR": "172.20.0.0/24", "CALICO_IPV4POOL_BLOCK_SIZE": 22},
     ["CALICO_IPV4POOL_CIDR", "172.20.0.0/24", "pool too small", "no longer than the block size /22"]),
    # The model's link-local check, which the agent applies on a host: refused here first.
    ({"CLUSTER_CIDR": "169.254.0.0/16"}, ["CLUSTER_CIDR: invalid value '169.254.0.0/16'",
                                          "does not overlap 169.254.0.0/16"]),
    ({"CLUSTER_CIDR": "169.0.0.0/8", "CALICO_IPV4POOL_CIDR": "169.254.128.0/18"},
     ["CALICO_IPV4POOL_CIDR", "does not overlap 169.254.0.0/16"]),
    ({"CALICO_IPV4POOL_NAT_OUTGOING": "maybe"}, ["CALICO_IPV4POOL_NAT_OUTGOING", "true or false"]),
    ({"CALICO_AS_NUMBER": "0"}, ["CALICO_AS_NUMBER", "from 1 to 4294967295"]),
    ({"CALICO_MTU": "100"}, ["CALICO_MTU", "576 to 65535"]),
    ({"IP_AUTODETECTION_METHOD": "guess"}, ["IP_AUTODETECTION_METHOD", "can-reach="]),
    ({"IP_AUTODETECTION_METHOD": "cidr=10.0.0.0/33"}, ["IP_AUTODETECTION_METHOD", "not a CIDR"]),
    ({"CALICO_RR_ENABLED": "true", "CALICO_RR_NODES": ["10.9.9.9"]}, ["CALICO_RR_NODES", "10.9.9.9 is not"]),
    ({"CALICO_RR_ENABLED": "true", "CALICO_NETWORKING_BACKEND": "vxlan"},
     ["CALICO_RR_ENABLED", "route reflectors need BGP"]),
    ({"CALICO_RR_ENABLED": "true", "CALICO_RR_CLUSTER_ID": "cluster-a"}, ["CALICO_RR_CLUSTER_ID", "IPv4"]),
    ({"PROXY_MODE": "userspace"}, ["PROXY_MODE: invalid value 'userspace'", "iptables, ipvs or nftables"]),
    ({"PROXY_MODE": "ipvs"}, ["PROXY_MODE: invalid value 'ipvs'", "ingress policy is not applied",
                              "pycalico_accept_ipvs_policy_gap=true"]),
    ({"PROXY_MODE": "ipvs", "pycalico_accept_ipvs_policy_gap": "perhaps"},
     ["pycalico_accept_ipvs_policy_gap", "true or false"]),
])
def test_bad_variables_are_named(f, raw, fragments):
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError) as err:
        settings(f, **raw)
    for fragment in fragments:
        assert fragment in str(err.value), f"{fragment!r} not in {err.value}"


def test_node_targets_and_names(f):
    from ansible.errors import AnsibleFilterError

    assert f.node_target("192.168.1.2", "NODE_TO_ADD", GROUPS) == "192.168.1.2"
    with pytest.raises(AnsibleFilterError, match="NODE_TO_ADD: invalid value '192.168.1.77'.*inventory"):
        f.node_target("192.168.1.77", "NODE_TO_ADD", GROUPS)
    with pytest.raises(AnsibleFilterError, match="NODE_TO_DEL: invalid value 'worker'.*IPv4"):
        f.node_target("worker", "NODE_TO_DEL", GROUPS)
    with pytest.raises(AnsibleFilterError, match="NODE_TO_DEL.*required"):
        f.node_target("", "NODE_TO_DEL", GROUPS)
    assert f.node_name("192.168.1.2") == "k8s-192-168-1-2"
    assert f.node_name("192.168.1.2", "Worker_01") == "worker-01"
    assert f.node_name("192.168.1.2", "worker-01", "custom") == "custom"
    assert f.etcd_endpoints(["10.0.0.1", "10.0.0.2"]) == "https://10.0.0.1:2379,https://10.0.0.2:2379"
