"""Policy kinds: Calico's examples round-trip, the client's defaulting, a table of refused
input naming the field path and the value, and the store's tier rules against a real etcd."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from pycalico.datastore.etcd import EtcdClient
from pycalico.errors import ValidationError
from pycalico.model import (
    GlobalNetworkPolicy,
    NetworkPolicy,
    ResourceStore,
    Tier,
    WorkloadEndpoint,
    from_json,
)
from pycalico.model.store import ensure_default_tiers

V3 = "projectcalico.org/v3"
TIER = {"projectcalico.org/tier": "default"}


def _doc(kind: str, name: str, spec: dict[str, Any], namespace: str | None = None,
         labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels is not None:
        meta["labels"] = labels
    return {"kind": kind, "apiVersion": V3, "metadata": meta, "spec": spec}


# Calico's documented sample resources (docs.tigera.io reference pages), as Calico's client
# stores them: types defaulted, tier "default" and its label set, Tier defaultAction filled in.
STORED_EXAMPLES: list[dict[str, Any]] = [
    _doc("NetworkPolicy", "allow-tcp-6379", {
        "tier": "default", "selector": "role == 'database'", "types": ["Ingress", "Egress"],
        "ingress": [{"action": "Allow", "metadata": {"annotations": {"from": "frontend", "to": "database"}},
                     "protocol": "TCP", "source": {"selector": "role == 'frontend'"},
                     "destination": {"ports": [6379]}}],
        "egress": [{"action": "Allow"}]}, namespace="production", labels=TIER),
    _doc("GlobalNetworkPolicy", "allow-tcp-6379", {
        "tier": "default", "selector": "role == 'database'", "types": ["Ingress", "Egress"],
        "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'frontend'"},
                     "destination": {"ports": [6379]}}],
        "egress": [{"action": "Allow"}]}, labels=TIER),
    _doc("GlobalNetworkPolicy", "allow-nodeport", {
        "tier": "default", "preDNAT": True, "applyOnForward": True, "order": 10, "selector": "has(host-endpoint)",
        "types": ["Ingress"],
        "ingress": [{"action": "Allow", "protocol": "TCP",
                     "destination": {"selector": "has(host-endpoint)", "ports": [31852]}}]}, labels=TIER),
    _doc("GlobalNetworkPolicy", "security.block-ssh", {
        "tier": "security", "order": 0.5, "doNotTrack": True, "applyOnForward": True, "selector": "all()",
        "namespaceSelector": "team == 'ops'", "serviceAccountSelector": "role != 'admin'",
        "performanceHints": ["AssumeNeededOnEveryNode"], "types": ["Ingress", "Egress"],
        "ingress": [{"action": "Deny", "protocol": 6, "destination": {"ports": ["22:23", "ssh"]},
                     "source": {"notNets": ["10.0.0.0/8"], "namespaceSelector": "global()"}},
                    {"action": "Pass"}],
        "egress": [{"action": "Log", "ipVersion": 6, "protocol": "ICMPv6", "icmp": {"type": 128, "code": 0},
                    "destination": {"nets": ["fd00::/64"]}},
                   {"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8}, "ipVersion": 4}]},
        labels={"projectcalico.org/tier": "security"}),
    _doc("NetworkPolicy", "knp.default.web", {
        "tier": "default", "order": 1000, "selector": "projectcalico.org/orchestrator == 'k8s' && app == 'web'",
        "types": ["Ingress"],
        "ingress": [{"action": "Allow", "protocol": "TCP",
                     "source": {"selector": "projectcalico.org/orchestrator == 'k8s'",
                                "namespaceSelector": "all()",
                                "serviceAccounts": {"names": ["api"], "selector": "tier == 'fe'"}},
                     "destination": {"ports": ["http", "8080:8090"], "notPorts": [8081]}},
                    {"action": "Allow", "source": {"services": {"name": "db", "namespace": "data"}}},
                    {"action": "Allow", "protocol": "TCP",
                     "http": {"methods": ["GET"], "paths": [{"prefix": "/api"}]}}]},
        namespace="default", labels=TIER),
    _doc("Profile", "dev-apps", {
        "ingress": [{"action": "Deny", "source": {"nets": ["10.0.20.0/24"]}},
                    {"action": "Allow", "source": {"selector": "stage == 'development'"}}],
        "egress": [{"action": "Allow"}],
        "labelsToApply": {"stage": "development"}}),
    _doc("NetworkSet", "external-database", {"nets": ["198.51.100.0/28", "203.0.113.0/24"]},
         namespace="staging", labels={"role": "db"}),
    _doc("GlobalNetworkSet", "a-name-for-the-set", {"nets": ["198.51.100.0/28", "203.0.113.0/24", "10.1.2.3"]},
         labels={"role": "external-database"}),
    _doc("HostEndpoint", "some.name", {
        "interfaceName": "eth0", "node": "myhost", "expectedIPs": ["192.168.0.1", "192.168.0.2"],
        "profiles": ["profile1", "profile2"],
        "ports": [{"name": "some-port", "port": 1234, "protocol": "TCP"},
                  {"name": "another-port", "port": 5432, "protocol": "UDP"}]}, labels={"type": "production"}),
    _doc("HostEndpoint", "node1-all", {"interfaceName": "*", "node": "node1"}),
    _doc("Tier", "internal-access", {"order": 100, "defaultAction": "Deny"}),
    _doc("Tier", "last", {"defaultAction": "Pass"}),
    _doc("Tier", "default", {"order": 1000000, "defaultAction": "Deny"}),
    _doc("Tier", "kube-admin", {"order": 1000, "defaultAction": "Pass"}),
]


@pytest.mark.parametrize("stored", STORED_EXAMPLES, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_calico_examples_round_trip_unchanged(stored: dict[str, Any]) -> None:
    res = from_json(copy.deepcopy(stored))
    res.apply_defaults()
    res.validate()
    assert res.to_json() == stored
    assert json.loads(json.dumps(res.to_json())) == stored


def _defaulted(data: dict[str, Any]) -> dict[str, Any]:
    res = from_json(data)
    res.apply_defaults()
    res.validate()
    return res.to_json()


@pytest.mark.parametrize(("rules", "types"), [
    ({}, ["Ingress"]),
    ({"ingress": [{"action": "Allow"}]}, ["Ingress"]),
    ({"egress": [{"action": "Allow"}]}, ["Egress"]),
    ({"ingress": [{"action": "Allow"}], "egress": [{"action": "Deny"}]}, ["Ingress", "Egress"]),
    ({"egress": [{"action": "Allow"}], "types": ["Ingress"]}, ["Ingress"]),
    ({"types": ["Egress", "Ingress"]}, ["Egress", "Ingress"]),
])
@pytest.mark.parametrize("kind", ["NetworkPolicy", "GlobalNetworkPolicy"])
def test_types_defaulted_as_calicos_client(kind: str, rules: dict[str, Any], types: list[str]) -> None:
    out = _defaulted(_doc(kind, "p", dict(rules), namespace="ns" if kind == "NetworkPolicy" else None))
    assert out["spec"]["types"] == types
    assert out["spec"]["tier"] == "default"
    assert out["metadata"]["labels"] == {"projectcalico.org/tier": "default"}


def test_tier_label_follows_the_tier_and_keeps_other_labels() -> None:
    out = _defaulted(_doc("GlobalNetworkPolicy", "sec.p", {"tier": "sec"},
                          labels={"app": "x", "projectcalico.org/tier": "stale"}))
    assert out["metadata"]["labels"] == {"app": "x", "projectcalico.org/tier": "sec"}


def test_typed_accessors() -> None:
    gnp = from_json(_doc("GlobalNetworkPolicy", "p", {"order": 5, "egress": [{"action": "Allow"}]}))
    assert isinstance(gnp, GlobalNetworkPolicy)
    assert gnp.tier == "default" and gnp.order == 5.0 and gnp.types == []  # as stored, before defaults
    gnp.apply_defaults()
    assert gnp.types == ["Egress"]
    np = from_json(_doc("NetworkPolicy", "q", {}, namespace="ns"))
    assert isinstance(np, NetworkPolicy) and np.order is None
    tier = from_json(_doc("Tier", "t", {}))
    assert isinstance(tier, Tier) and tier.order is None and tier.default_action == "Deny"
    tier.apply_defaults()
    assert tier.spec == {"defaultAction": "Deny"}


def _np(spec: dict[str, Any]) -> dict[str, Any]:
    return _doc("NetworkPolicy", "p", spec, namespace="ns")


def _gnp(spec: dict[str, Any]) -> dict[str, Any]:
    return _doc("GlobalNetworkPolicy", "p", spec)


def _in(rule: dict[str, Any]) -> dict[str, Any]:
    return _np({"ingress": [rule]})


INVALID: list[tuple[str, dict[str, Any], str, Any]] = [
    ("unknown entity field", _in({"action": "Allow", "destination": {"prots": [80]}}),
     "spec.ingress[0].destination.prots", [80]),
    ("unknown rule field", _np({"egress": [{"action": "Allow"}, {"action": "Allow", "protcol": "TCP"}]}),
     "spec.egress[1].protcol", "TCP"),
    ("unknown spec field", _np({"selectr": "all()"}), "spec.selectr", "all()"),
    ("unknown icmp field", _in({"action": "Allow", "protocol": "ICMP", "icmp": {"typ": 8}}),
     "spec.ingress[0].icmp.typ", 8),
    ("unknown serviceAccounts field", _in({"action": "Allow", "source": {"serviceAccounts": {"name": ["a"]}}}),
     "spec.ingress[0].source.serviceAccounts.name", ["a"]),
    ("unknown metadata field", {**_np({}), "metadata": {"name": "p", "namespace": "ns", "label": {}}},
     "metadata.label", {}),
    ("missing action", _in({"protocol": "TCP"}), "spec.ingress[0].action", None),
    ("bad action", _in({"action": "Accept"}), "spec.ingress[0].action", "Accept"),
    ("lowercase protocol", _in({"action": "Allow", "protocol": "tcp"}), "spec.ingress[0].protocol", "tcp"),
    ("protocol 0", _in({"action": "Allow", "notProtocol": 0}), "spec.ingress[0].notProtocol", 0),
    ("protocol 256", _in({"action": "Allow", "protocol": 256}), "spec.ingress[0].protocol", 256),
    ("icmp type 255", _in({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 255}}),
     "spec.ingress[0].icmp.type", 255),
    ("icmp code 256", _in({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 3, "code": 256}}),
     "spec.ingress[0].icmp.code", 256),
    ("icmp code without type", _in({"action": "Allow", "protocol": "ICMP", "icmp": {"code": 1}}),
     "spec.ingress[0].icmp.code", 1),
    ("icmp without ICMP protocol", _in({"action": "Allow", "protocol": "TCP", "icmp": {"type": 8}}),
     "spec.ingress[0].icmp", {"type": 8}),
    ("notICMP without protocol", _in({"action": "Allow", "notICMP": {"type": 8}}),
     "spec.ingress[0].notICMP", {"type": 8}),
    ("ICMP with ipVersion 6", _in({"action": "Allow", "protocol": "ICMP", "ipVersion": 6}),
     "spec.ingress[0].ipVersion", 6),
    ("ICMPv6 with ipVersion 4", _in({"action": "Allow", "notProtocol": "ICMPv6", "ipVersion": 4}),
     "spec.ingress[0].ipVersion", 4),
    ("ipVersion 5", _in({"action": "Allow", "ipVersion": 5}), "spec.ingress[0].ipVersion", 5),
    ("not a CIDR", _in({"action": "Allow", "source": {"nets": ["10.0.0.0/8", "10.0.0.300/32"]}}),
     "spec.ingress[0].source.nets[1]", "10.0.0.300/32"),
    ("host bits in a rule net", _in({"action": "Allow", "source": {"nets": ["10.1.2.3/8"]}}),
     "spec.ingress[0].source.nets[0]", "10.1.2.3/8"),
    ("catch-all notNets", _in({"action": "Allow", "destination": {"notNets": ["0.0.0.0/0"]}}),
     "spec.ingress[0].destination.notNets[0]", "0.0.0.0/0"),
    ("mixed IP families", _in({"action": "Allow", "source": {"nets": ["10.0.0.0/8"]},
                               "destination": {"nets": ["fd00::/8"]}}),
     "spec.ingress[0].destination.nets[0]", "fd00::/8"),
    ("net against ipVersion", _in({"action": "Allow", "ipVersion": 6, "source": {"nets": ["10.0.0.0/8"]}}),
     "spec.ingress[0].source.nets[0]", "10.0.0.0/8"),
    ("numeric port without protocol", _np({"egress": [{"action": "Allow"}, {"action": "Allow"}, {
        "action": "Allow", "destination": {"ports": ["http", 80]}}]}), "spec.egress[2].destination.ports[1]", 80),
    ("ports with ICMP", _in({"action": "Allow", "protocol": "ICMP", "destination": {"ports": ["http"]}}),
     "spec.ingress[0].destination.ports[0]", "http"),
    ("port 65536", _in({"action": "Allow", "protocol": "TCP", "destination": {"ports": [65536]}}),
     "spec.ingress[0].destination.ports[0]", 65536),
    ("inverted range", _in({"action": "Allow", "protocol": "UDP", "source": {"notPorts": ["90:80"]}}),
     "spec.ingress[0].source.notPorts[0]", "90:80"),
    ("bad port name", _in({"action": "Allow", "destination": {"ports": ["h ttp"]}}),
     "spec.ingress[0].destination.ports[0]", "h ttp"),
    ("bad selector", _in({"action": "Allow", "source": {"selector": "app = 'x'"}}),
     "spec.ingress[0].source.selector", "app = 'x'"),
    ("global() in a rule selector", _in({"action": "Allow", "source": {"selector": "global()"}}),
     "spec.ingress[0].source.selector", "global()"),
    ("global() combined", _in({"action": "Allow", "source": {"namespaceSelector": "global() && a == 'b'"}}),
     "spec.ingress[0].source.namespaceSelector", "global() && a == 'b'"),
    ("global() in the policy selector", _gnp({"selector": "global()"}), "spec.selector", "global()"),
    ("services with a selector", _in({"action": "Allow", "source": {"services": {"name": "db"},
                                                                    "selector": "a == 'b'"}}),
     "spec.ingress[0].source.services", {"name": "db"}),
    ("services in an ingress destination", _in({"action": "Allow", "destination": {"services": {"name": "db"}}}),
     "spec.ingress[0].destination.services", {"name": "db"}),
    ("GNP services without namespace", _gnp({"egress": [{"action": "Allow",
                                                          "destination": {"services": {"name": "db"}}}]}),
     "spec.egress[0].destination.services.namespace", None),
    ("http on a Deny rule", _in({"action": "Deny", "http": {"methods": ["GET"]}}),
     "spec.ingress[0].http", {"methods": ["GET"]}),
    ("bad rule annotation", _in({"action": "Allow", "metadata": {"annotations": {"bad key": "v"}}}),
     "spec.ingress[0].metadata.annotations.bad key", "bad key"),
    ("repeated type", _np({"types": ["Ingress", "Ingress"]}), "spec.types[1]", "Ingress"),
    ("bad type", _np({"types": ["ingress"]}), "spec.types[0]", "ingress"),
    ("order not a number", _np({"order": "10"}), "spec.order", "10"),
    ("NP with a GNP-only field", _np({"doNotTrack": True}), "spec.doNotTrack", True),
    ("NP namespaceSelector", _np({"namespaceSelector": "all()"}), "spec.namespaceSelector", "all()"),
    ("NP name with two dots", _doc("NetworkPolicy", "a.b.c", {}, namespace="ns"), "metadata.name", "a.b.c"),
    ("GNP name knp.default", _doc("GlobalNetworkPolicy", "knp.default.x", {}), "metadata.name", "knp.default.x"),
    ("tier with a dot", _np({"tier": "a.b"}), "spec.tier", "a.b"),
    ("bad performance hint", _gnp({"performanceHints": ["Always"]}), "spec.performanceHints[0]", "Always"),
    ("preDNAT and doNotTrack", _gnp({"preDNAT": True, "doNotTrack": True, "applyOnForward": True}),
     "spec.preDNAT", True),
    ("preDNAT egress rules", _gnp({"preDNAT": True, "applyOnForward": True, "egress": [{"action": "Allow"}]}),
     "spec.egress", [{"action": "Allow"}]),
    ("preDNAT Egress type", _gnp({"preDNAT": True, "applyOnForward": True, "types": ["Egress"]}),
     "spec.types", ["Egress"]),
    ("doNotTrack without applyOnForward", _gnp({"doNotTrack": True, "applyOnForward": False}),
     "spec.applyOnForward", False),
    ("applyOnForward not a bool", _gnp({"applyOnForward": "yes"}), "spec.applyOnForward", "yes"),
    ("profile rule", _doc("Profile", "pr", {"egress": [{"action": "Allow", "protocol": "TCP",
                                                         "destination": {"ports": ["1:2:3"]}}]}),
     "spec.egress[0].destination.ports[0]", "1:2:3"),
    ("profile labelsToApply", _doc("Profile", "pr", {"labelsToApply": {"a": "b c"}}), "spec.labelsToApply.a",
     "b c"),
    ("network set net", _doc("NetworkSet", "s", {"nets": ["10.0.0.0/33"]}, namespace="ns"), "spec.nets[0]",
     "10.0.0.0/33"),
    ("network set unknown field", _doc("GlobalNetworkSet", "s", {"net": ["10.0.0.0/8"]}), "spec.net",
     ["10.0.0.0/8"]),
    ("network set namespace label", _doc("GlobalNetworkSet", "s", {}, labels={"projectcalico.org/namespace": "x"}),
     "metadata.labels.projectcalico.org/namespace", "x"),
    ("HEP without node", _doc("HostEndpoint", "h", {"interfaceName": "eth0"}), "spec.node", None),
    ("HEP without interface or IPs", _doc("HostEndpoint", "h", {"node": "n1"}), "spec.interfaceName", None),
    ("HEP bad expected IP", _doc("HostEndpoint", "h", {"node": "n1", "expectedIPs": ["10.0.0.0/24"]}),
     "spec.expectedIPs[0]", "10.0.0.0/24"),
    ("HEP interface too long", _doc("HostEndpoint", "h", {"node": "n1", "interfaceName": "a" * 16}),
     "spec.interfaceName", "a" * 16),
    ("HEP port protocol", _doc("HostEndpoint", "h", {"node": "n1", "interfaceName": "eth0",
                                                      "ports": [{"name": "p", "port": 1, "protocol": "ICMP"}]}),
     "spec.ports[0].protocol", "ICMP"),
    ("HEP port name", _doc("HostEndpoint", "h", {"node": "n1", "interfaceName": "eth0",
                                                  "ports": [{"name": "Web_1", "port": 80, "protocol": "TCP"}]}),
     "spec.ports[0].name", "Web_1"),
    ("HEP port field", _doc("HostEndpoint", "h", {"node": "n1", "interfaceName": "eth0",
                                                   "ports": [{"name": "w", "prot": 80, "protocol": "TCP"}]}),
     "spec.ports[0].prot", 80),
    ("HEP profile", _doc("HostEndpoint", "h", {"node": "n1", "interfaceName": "eth0", "profiles": ["Bad"]}),
     "spec.profiles[0]", "Bad"),
    ("tier name with a dot", _doc("Tier", "a.b", {}), "metadata.name", "a.b"),
    ("tier default action", _doc("Tier", "t", {"defaultAction": "Allow"}), "spec.defaultAction", "Allow"),
    ("tier order", _doc("Tier", "t", {"order": True}), "spec.order", True),
    ("default tier order pinned", _doc("Tier", "default", {"order": 100}), "spec.order", 100),
    ("kube-baseline order pinned", _doc("Tier", "kube-baseline", {"order": 1000, "defaultAction": "Pass"}),
     "spec.order", 1000),
    ("kube-admin action pinned", _doc("Tier", "kube-admin", {"order": 1000, "defaultAction": "Deny"}),
     "spec.defaultAction", "Deny"),
    ("tier unknown field", _doc("Tier", "t", {"ordr": 1}), "spec.ordr", 1),
    ("tier unknown top-level", {**_doc("Tier", "t", {}), "stats": {}}, "stats", {}),
]


@pytest.mark.parametrize(("case", "data", "field", "value"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_resources_are_refused_naming_field_and_value(case: str, data: dict[str, Any], field: str,
                                                               value: Any) -> None:
    res = from_json(copy.deepcopy(data))
    res.apply_defaults()
    with pytest.raises(ValidationError) as err:
        res.validate()
    assert err.value.field == field
    assert err.value.value == value
    assert repr(value) in str(err.value)
    assert err.value.allowed


def test_unknown_field_error_lists_the_allowed_names() -> None:
    res = from_json(_in({"action": "Allow", "destination": {"prots": [80]}}))
    with pytest.raises(ValidationError) as err:
        res.validate()
    for name in ("nets", "notNets", "selector", "notSelector", "namespaceSelector", "ports", "notPorts",
                 "serviceAccounts", "services"):
        assert name in err.value.allowed


def test_workload_endpoint_profiles_and_ports_are_checked() -> None:
    wep = WorkloadEndpoint("n1-k8s-p-eth0", {"node": "n1", "profiles": ["kns.ns", 3],
                                             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
                           namespace="ns")
    with pytest.raises(ValidationError) as err:
        wep.validate()
    assert (err.value.field, err.value.value) == ("spec.profiles[1]", 3)
    wep.spec["profiles"] = ["kns.ns"]
    wep.spec["ports"].append({"name": "", "port": 0, "protocol": "TCP"})
    with pytest.raises(ValidationError) as err:
        wep.validate()
    assert err.value.field == "spec.ports[1].name"
    wep.spec["ports"][1] = {"port": 53, "protocol": "UDP", "hostPort": 5353, "hostIP": "10.0.0.1"}
    wep.validate()


# ---- the store, against a real etcd ------------------------------------------------------------
def _all_keys(etcd: EtcdClient) -> list[str]:
    kvs, _ = etcd.list("/calico/")
    return [kv.key for kv in kvs]


def test_refused_policy_writes_nothing(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    bad = from_json(_in({"action": "Allow", "destination": {"prots": [80]}}))
    with pytest.raises(ValidationError) as err:
        store.create(bad)
    assert err.value.field == "spec.ingress[0].destination.prots"
    with pytest.raises(ValidationError):
        store.apply(bad)
    assert _all_keys(etcd) == []


def test_policy_in_the_default_tier_creates_the_tier(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    created = store.create(from_json(_np({"ingress": [{"action": "Allow"}]})))
    tier = store.must_get(Tier, "default")
    assert tier.spec == {"order": 1000000, "defaultAction": "Deny"}
    stored = store.must_get(NetworkPolicy, "p", "ns")
    assert stored.spec["types"] == ["Ingress"] and stored.spec["tier"] == "default"
    assert stored.labels == {"projectcalico.org/tier": "default"}
    assert stored.resource_version == created.resource_version
    applied = store.apply(from_json(_gnp({"egress": [{"action": "Deny"}]})))
    assert applied.spec["types"] == ["Egress"]
    assert sorted(_all_keys(etcd)) == [
        "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/p",
        "/calico/resources/v3/projectcalico.org/networkpolicies/ns/p",
        "/calico/resources/v3/projectcalico.org/tiers/default",
    ]


def test_policy_in_a_missing_tier_is_refused_until_the_tier_exists(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    policy = from_json(_doc("GlobalNetworkPolicy", "sec.p", {"tier": "sec"}))
    for write in (store.create, store.apply):
        with pytest.raises(ValidationError) as err:
            write(policy)
        assert (err.value.field, err.value.value) == ("spec.tier", "sec")
        assert "does not exist" in str(err.value)
    assert _all_keys(etcd) == []
    store.create(Tier("sec", {"order": 100}))
    assert store.apply(policy).labels["projectcalico.org/tier"] == "sec"
    assert store.must_get(Tier, "sec").spec == {"order": 100, "defaultAction": "Deny"}
    assert store.get(Tier, "default") is None  # only a default-tier policy creates it


def test_ensure_default_tiers_creates_calicos_three_once(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    assert ensure_default_tiers(store) == ["kube-admin", "default", "kube-baseline"]
    assert ensure_default_tiers(store) == []
    orders = {t.name: (t.order, t.default_action) for t in store.list(Tier)}
    assert orders == {"default": (1e6, "Deny"), "kube-admin": (1e3, "Pass"), "kube-baseline": (1e7, "Pass")}


def test_the_default_tier_cannot_be_deleted(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    ensure_default_tiers(store)
    with pytest.raises(ValidationError) as err:
        store.delete(Tier, "default")
    assert (err.value.field, err.value.value) == ("metadata.name", "default")
    assert "cannot be deleted" in str(err.value)
    assert store.get(Tier, "default") is not None
    assert store.delete(Tier, "kube-admin")  # the others can go, as in Calico
