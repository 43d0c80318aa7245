"""Resources: JSON round trip against Calico-shaped examples, defaults, validation table."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from pycalico.errors import ValidationError
from pycalico.model import (
    BGPConfiguration,
    BGPPeer,
    ClusterInformation,
    FelixConfiguration,
    IPPool,
    Node,
    WorkloadEndpoint,
    from_json,
    keys,
    kind_by_name,
    wep_name,
)
from pycalico.model.resources import split_peer_ip

CALICO_EXAMPLES: list[dict[str, Any]] = [
    {"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
     "metadata": {"name": "default-ipv4-ippool", "uid": "0b7c4c1e-1111-2222-3333-444455556666",
                  "creationTimestamp": "2026-01-01T00:00:00Z"},
     "spec": {"cidr": "10.244.0.0/16", "vxlanMode": "Never", "ipipMode": "Always", "natOutgoing": True,
              "blockSize": 26, "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"],
              "assignmentMode": "Automatic"}},
    {"kind": "Node", "apiVersion": "projectcalico.org/v3",
     "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
     "spec": {"bgp": {"ipv4Address": "10.0.0.5/24", "ipv4IPIPTunnelAddr": "10.244.12.0", "asNumber": 64513},
              "ipv4VXLANTunnelAddr": "10.244.12.1", "vxlanTunnelMACAddr": "66:1a:2b:3c:4d:5e",
              "orchRefs": [{"nodeName": "node-1", "orchestrator": "k8s"}],
              "addresses": [{"address": "10.0.0.5/24", "type": "CalicoNodeIP"}]},
     "status": {"podCIDRs": ["10.244.12.0/24"]}},
    {"kind": "BGPPeer", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "peer-with-rr"},
     "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}},
    {"kind": "BGPPeer", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "tor"},
     "spec": {"node": "node-1", "peerIP": "192.168.1.1", "asNumber": 65001, "keepOriginalNextHop": False}},
    {"kind": "BGPConfiguration", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "default"},
     "spec": {"logSeverityScreen": "Info", "nodeToNodeMeshEnabled": False, "asNumber": 63400,
              "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]}},
    {"kind": "FelixConfiguration", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "default"},
     "spec": {"reportingInterval": "0s", "logSeverityScreen": "Info", "bpfLogLevel": ""}},
    {"kind": "ClusterInformation", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "default"},
     "spec": {"clusterGUID": "5ad9b0a6e1b04b2f9a6b0c1d2e3f4a5b", "clusterType": "k8s,bgp,kubeadm",
              "calicoVersion": "v3.32.1", "datastoreReady": True}},
    {"kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
     "metadata": {"name": "node--1-k8s-web--0-eth0", "namespace": "default",
                  "labels": {"app": "web", "projectcalico.org/namespace": "default",
                             "projectcalico.org/orchestrator": "k8s"}},
     "spec": {"orchestrator": "k8s", "node": "node-1", "containerID": "3f2a9c", "pod": "web-0",
              "endpoint": "eth0", "serviceAccountName": "default", "ipNetworks": ["10.244.12.5/32"],
              "profiles": ["kns.default", "ksa.default.default"], "interfaceName": "cali1a2b3c4d5e6",
              "mac": "9a:0b:1c:2d:3e:4f", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
]


@pytest.mark.parametrize("example", CALICO_EXAMPLES, ids=lambda e: f"{e['kind']}-{e['metadata']['name']}")
def test_every_kind_round_trips_calico_json_unchanged(example: dict[str, Any]) -> None:
    original = copy.deepcopy(example)
    res = from_json(json.loads(json.dumps(example)))
    res.validate()
    assert res.to_json() == original
    assert type(res).from_json(res.to_json()) == res
    assert res.key() == keys.resource_key(type(res).PLURAL, example["metadata"]["name"],
                                          example["metadata"].get("namespace"))


def test_resource_keys_are_calicos() -> None:
    wep = from_json(CALICO_EXAMPLES[-1])
    assert wep.key() == ("/calico/resources/v3/projectcalico.org/workloadendpoints/default/"
                         "node--1-k8s-web--0-eth0")
    assert IPPool("p", {"cidr": "10.0.0.0/16"}).key() == "/calico/resources/v3/projectcalico.org/ippools/p"
    assert keys.block_key("10.244.12.0/26") == "/calico/ipam/v2/assignment/ipv4/block/10.244.12.0-26"
    assert keys.affinity_key("node-1", "10.244.12.0/26") == "/calico/ipam/v2/host/node-1/ipv4/block/10.244.12.0-26"
    assert keys.parse_affinity_key("/calico/ipam/v2/host/n-1/ipv4/block/10.244.12.0-26") == ("n-1", "10.244.12.0/26")
    assert keys.handle_key("k8s-pod-network.abc") == "/calico/ipam/v2/handle/k8s-pod-network.abc"
    assert keys.block_key("fd00::/122") == "/calico/ipam/v2/assignment/ipv6/block/fd00::-122"


def test_ippool_defaults_are_calicos() -> None:
    pool = IPPool("p", {"cidr": "10.244.0.0/16"})
    pool.apply_defaults()
    assert pool.spec == {"cidr": "10.244.0.0/16", "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never",
                         "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"],
                         "assignmentMode": "Automatic"}
    v6 = IPPool("p6", {"cidr": "fd00:10::/64"})
    v6.apply_defaults()
    assert v6.spec["blockSize"] == 122


def test_effective_defaults_of_bgp_configuration() -> None:
    empty = BGPConfiguration("default", {})
    assert (empty.as_number, empty.node_to_node_mesh, empty.listen_port) == (64512, True, 179)


def test_wep_names_double_inner_dashes() -> None:
    assert wep_name("node-1", "k8s", "web-0", "eth0") == "node--1-k8s-web--0-eth0"
    assert wep_name("n1", "cni", "abc123", "eth0") == "n1-cni-abc123-eth0"


def test_kind_lookup_accepts_singular_plural_and_case() -> None:
    assert kind_by_name("ippools") is IPPool
    assert kind_by_name("BGPPeer") is BGPPeer
    assert kind_by_name("node") is Node


def test_peer_ip_with_port_splits() -> None:
    assert split_peer_ip("10.0.0.1:1179") == ("10.0.0.1", 1179)
    assert split_peer_ip("[fd00::1]:179") == ("fd00::1", 179)
    assert split_peer_ip("fd00::1") == ("fd00::1", None)


def pool(**spec: Any) -> IPPool:
    return IPPool("p1", {"cidr": "10.244.0.0/16", **spec})


# (resource, field named in the error, a fragment of what is allowed)
BAD_INPUTS: list[tuple[str, Any, str, str]] = [
    ("cidr missing", IPPool("p1", {}), "spec.cidr", "a CIDR"),
    ("cidr garbage", pool(cidr="10.244.0.0/33"), "spec.cidr", "a CIDR"),
    ("cidr not an ip", pool(cidr="banana"), "spec.cidr", "a CIDR"),
    ("host bits set", pool(cidr="10.244.0.1/16"), "spec.cidr", "zero host bits"),
    ("block size too small", pool(blockSize=19), "spec.blockSize", "from 20 to 32"),
    ("block size too big", pool(blockSize=33), "spec.blockSize", "from 20 to 32"),
    ("block size not int", pool(blockSize="26"), "spec.blockSize", "from 20 to 32"),
    ("v6 block size", IPPool("p6", {"cidr": "fd00::/64", "blockSize": 64}), "spec.blockSize", "from 116 to 128"),
    ("pool smaller than block", pool(cidr="10.244.0.0/28", blockSize=26), "spec.cidr", "no longer than"),
    ("ipip mode unknown", pool(ipipMode="always"), "spec.ipipMode", "Never|Always|CrossSubnet"),
    ("vxlan mode unknown", pool(vxlanMode="Sometimes"), "spec.vxlanMode", "Never|Always|CrossSubnet"),
    ("ipip and vxlan", pool(ipipMode="Always", vxlanMode="CrossSubnet"), "spec.ipipMode", "Never when"),
    ("ipip on v6", IPPool("p6", {"cidr": "fd00::/64", "ipipMode": "Always"}), "spec.ipipMode", "IPv6"),
    ("link local", pool(cidr="169.254.0.0/16"), "spec.cidr", "169.254.0.0/16"),
    ("nat not bool", pool(natOutgoing="yes"), "spec.natOutgoing", "true or false"),
    ("selector syntax", pool(nodeSelector="role == "), "spec.nodeSelector", "Calico selector"),
    ("selector global", pool(nodeSelector="global()"), "spec.nodeSelector", "Calico selector"),
    ("allowed uses unknown", pool(allowedUses=["Pods"]), "spec.allowedUses", "Workload|Tunnel|LoadBalancer"),
    ("allowed uses empty", pool(allowedUses=[]), "spec.allowedUses", "non-empty"),
    ("load balancer mixed", pool(allowedUses=["LoadBalancer", "Workload"]), "spec.allowedUses", "LoadBalancer alone"),
    ("assignment mode", pool(assignmentMode="Sometimes"), "spec.assignmentMode", "Automatic|Manual"),
    ("bad name", IPPool("Bad_Name", {"cidr": "10.0.0.0/16"}), "metadata.name", "lowercase"),
    ("node address not cidr", Node("n1", {"bgp": {"ipv4Address": "10.0.0.5"}}), "spec.bgp.ipv4Address", "CIDR form"),
    ("node as number", Node("n1", {"bgp": {"asNumber": 0}}), "spec.bgp.asNumber", "1 to 4294967295"),
    ("node rr cluster id", Node("n1", {"bgp": {"routeReflectorClusterID": "rr1"}}),
     "spec.bgp.routeReflectorClusterID", "IPv4-formatted"),
    ("peer ip garbage", BGPPeer("x", {"peerIP": "10.0.0.300"}), "spec.peerIP", "IPv4/IPv6 address"),
    ("peer port", BGPPeer("x", {"peerIP": "10.0.0.1:70000"}), "spec.peerIP", "port from 1 to 65535"),
    ("peer node and selector", BGPPeer("x", {"node": "a", "nodeSelector": "all()", "peerIP": "10.0.0.1"}),
     "spec.nodeSelector", "empty when spec.node"),
    ("peer without target", BGPPeer("x", {"node": "a"}), "spec.peerIP", "peerSelector"),
    ("peer as", BGPPeer("x", {"peerIP": "10.0.0.1", "asNumber": -1}), "spec.asNumber", "1 to 4294967295"),
    ("bgp log level", BGPConfiguration("default", {"logSeverityScreen": "Loud"}), "spec.logSeverityScreen",
     "Debug|Info"),
    ("bgp listen port", BGPConfiguration("default", {"listenPort": 0}), "spec.listenPort", "1 to 65535"),
    ("bgp mesh flag", BGPConfiguration("default", {"nodeToNodeMeshEnabled": "no"}), "spec.nodeToNodeMeshEnabled",
     "true or false"),
    ("cluster ready flag", ClusterInformation("default", {"datastoreReady": "true"}), "spec.datastoreReady",
     "true or false"),
    ("wep bad network", WorkloadEndpoint("n-cni-x-eth0", {"ipNetworks": ["10.0.0.300/32"]}, namespace="default"),
     "spec.ipNetworks[0]", "a CIDR"),
    ("wep without namespace", WorkloadEndpoint("n-cni-x-eth0", {}), "metadata.namespace", "namespace"),
]


@pytest.mark.parametrize(("case", "resource", "field", "allowed"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_validation_names_field_value_and_what_is_allowed(case: str, resource: Any, field: str,
                                                           allowed: str) -> None:
    with pytest.raises(ValidationError) as err:
        resource.validate()
    assert err.value.field == field, str(err.value)
    assert allowed in err.value.allowed or allowed in str(err.value), str(err.value)
    assert str(err.value).startswith(f"{field}: invalid value ")


def test_validation_table_is_big_enough() -> None:
    assert len(BAD_INPUTS) >= 20


def test_good_resources_validate() -> None:
    for res in (pool(), pool(ipipMode="CrossSubnet"), pool(vxlanMode="Always", natOutgoing=True),
                BGPPeer("x", {"peerIP": "10.0.0.1:1179", "asNumber": 65000}),
                FelixConfiguration("default", {}), Node("n1", {})):
        res.validate()
