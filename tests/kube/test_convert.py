"""Kubernetes NetworkPolicy/Namespace/ServiceAccount/Pod → Calico, checked against what Calico's
converter writes (expected JSON written by hand from calico-kubernetes.md §3.3-3.6 and Calico's
conversion.go), including the scenarios of Kubernetes' network-policy e2e suite. Every converted
record must also pass pycalico's own model validation (what ResourceStore runs on write)."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.errors import ValidationError
from pycalico.kube import convert
from pycalico.model import NetworkPolicy

K8S = "projectcalico.org/orchestrator == 'k8s'"


def knp(spec: dict[str, Any], name: str = "p", namespace: str = "dev") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "7"}, "spec": spec}


def allow(protocol: str | None = None, source: dict[str, Any] | None = None,
          destination: dict[str, Any] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": "Allow"}
    if protocol:
        rule["protocol"] = protocol
    rule["source"] = source or {}
    rule["destination"] = destination or {}
    return rule


def converted(spec: dict[str, Any]) -> dict[str, Any]:
    policy = convert.network_policy(knp(spec))
    checked = policy.copy()
    checked.apply_defaults()
    checked.validate()  # what ResourceStore.create runs
    assert policy.name == "knp.default.p" and policy.namespace == "dev"
    return policy.spec


def spec(selector: str = K8S, types: tuple[str, ...] = ("Ingress",), **rules: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"tier": "default", "order": 1000, "selector": selector}
    out.update(rules)
    out["types"] = list(types)
    return out


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # e2e "should support a 'default-deny-ingress' policy"
    ("deny all ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}, spec()),
    ("deny all ingress, ingress: []", {"podSelector": {}, "ingress": [], "policyTypes": ["Ingress"]}, spec()),
    # e2e "should support a 'default-deny-all' policy"
    ("deny all both ways", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
     spec(types=("Ingress", "Egress"))),
    # e2e "should allow ingress access on one named port" / allow-all
    ("allow all ingress: ingress [{}]", {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]},
     spec(ingress=[allow()])),
    ("empty from is any peer", {"podSelector": {}, "ingress": [{"from": []}], "policyTypes": ["Ingress"]},
     spec(ingress=[allow()])),
    # e2e "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector
    # and NamespaceSelector" / "from pods by label"
    ("from pods by label, port 5432",
     {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
      "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "fe"}}}], "ports": [{"port": 5432}]}]},
     spec(f"{K8S} && app == 'db'",
          ingress=[allow("TCP", {"selector": f"{K8S} && role == 'fe'"}, {"ports": [5432]})])),
    # e2e "should enforce policy to allow traffic from pods within server namespace based on PodSelector"
    ("matchLabels keys sorted", {"podSelector": {"matchLabels": {"z": "1", "a": "2"}}, "policyTypes": ["Ingress"]},
     spec(f"{K8S} && a == '2' && z == '1'")),
    # e2e "should allow ingress access from namespace on one named port" / "from a namespace by label"
    ("from a namespace by label",
     {"podSelector": {}, "policyTypes": ["Ingress"],
      "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]},
     spec(ingress=[allow(source={"selector": K8S, "namespaceSelector": "team == 'b'"})])),
    # e2e "should enforce policy based on PodSelector and NamespaceSelector" (pods by label in another namespace)
    ("from pods by label in another namespace",
     {"podSelector": {}, "policyTypes": ["Ingress"],
      "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns-name": "b"}},
                             "podSelector": {"matchLabels": {"pod-name": "c"}}}]}]},
     spec(ingress=[allow(source={"selector": f"{K8S} && pod-name == 'c'", "namespaceSelector": "ns-name == 'b'"})])),
    ("every namespace, pods by expression",
     {"podSelector": {}, "policyTypes": ["Ingress"],
      "ingress": [{"from": [{"namespaceSelector": {},
                             "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In",
                                                                    "values": ["web", "api"]}]}}]}]},
     spec(ingress=[allow(source={"selector": f"{K8S} && tier in {{ 'web', 'api' }}", "namespaceSelector": "all()"})])),
    # e2e "should enforce policy based on NamespaceSelector with MatchExpressions"
    ("namespace NotIn / Exists / DoesNotExist",
     {"podSelector": {"matchExpressions": [{"key": "x", "operator": "Exists"},
                                           {"key": "y", "operator": "DoesNotExist"}]},
      "policyTypes": ["Ingress"],
      "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
          {"key": "ns", "operator": "NotIn", "values": ["a"]}]}}]}]},
     spec(f"{K8S} && has(x) && ! has(y)",
          ingress=[allow(source={"selector": K8S, "namespaceSelector": "ns not in { 'a' }"})])),
    # e2e "should allow ingress access from updated pod / ipBlock with except"
    ("ipBlock with except",
     {"podSelector": {}, "policyTypes": ["Ingress"],
      "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.3.4/32"]}}]}]},
     spec(ingress=[allow(source={"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16", "10.2.3.4/32"]})])),
    ("ipBlock CIDR normalised", {"podSelector": {}, "policyTypes": ["Ingress"],
                                 "ingress": [{"from": [{"ipBlock": {"cidr": "10.9.8.7/16"}}]}]},
     spec(ingress=[allow(source={"nets": ["10.9.0.0/16"]})])),
    # e2e "should enforce egress policy allowing traffic to a server in a different namespace based on
    # PodSelector and NamespaceSelector" / "egress to a CIDR"
    ("egress to a CIDR with except, port 443",
     {"podSelector": {}, "policyTypes": ["Egress"],
      "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                  "ports": [{"port": 443, "protocol": "TCP"}]}]},
     spec(types=("Egress",), egress=[allow("TCP", destination={"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"],
                                                               "ports": [443]})])),
    # e2e "should enforce policy to allow traffic only from ... policyTypes Egress only" (ingress untouched)
    ("policyTypes Egress only ignores no ingress",
     {"podSelector": {"matchLabels": {"app": "c"}}, "policyTypes": ["Egress"],
      "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "s"}}}]}]},
     spec(f"{K8S} && app == 'c'", types=("Egress",), egress=[allow(destination={"selector": f"{K8S} && app == 's'"})])),
    # e2e "should allow egress access to server in CIDR block" plus DNS (UDP and TCP 53)
    ("TCP and UDP 53 without peers: TCP first",
     {"podSelector": {}, "policyTypes": ["Egress"],
      "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]},
     spec(types=("Egress",), egress=[allow("TCP", destination={"ports": [53]}),
                                     allow("UDP", destination={"ports": [53]})])),
    ("numeric ports merged into ranges",
     {"podSelector": {}, "policyTypes": ["Ingress"],
      "ingress": [{"ports": [{"port": 8080}, {"port": 81}, {"port": 80}, {"port": 82}]}]},
     spec(ingress=[allow("TCP", destination={"ports": ["80:82", 8080]})])),
    # e2e "should enforce policy to allow ingress traffic from pods in all namespaces ... endPort"
    ("endPort is a range", {"podSelector": {}, "policyTypes": ["Ingress"],
                            "ingress": [{"ports": [{"port": 32000, "endPort": 32768}]}]},
     spec(ingress=[allow("TCP", destination={"ports": ["32000:32768"]})])),
    ("endPort ranges merged with ports",
     {"podSelector": {}, "policyTypes": ["Ingress"],
      "ingress": [{"ports": [{"port": 100, "endPort": 102}, {"port": 103}, {"port": 200, "endPort": 201}]}]},
     spec(ingress=[allow("TCP", destination={"ports": ["100:103", "200:201"]})])),
    # e2e "should allow ingress access on one named port"
    ("named port", {"podSelector": {}, "policyTypes": ["Ingress"],
                    "ingress": [{"ports": [{"port": "serve-80-tcp"}]}]},
     spec(ingress=[allow("TCP", destination={"ports": ["serve-80-tcp"]})])),
    ("named port with UDP", {"podSelector": {}, "policyTypes": ["Ingress"],
                             "ingress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]},
     spec(ingress=[allow("UDP", destination={"ports": ["serve-81-udp"]})])),
    ("named and numeric ports: names first",
     {"podSelector": {}, "policyTypes": ["Ingress"],
      "ingress": [{"ports": [{"port": 81}, {"port": "http"}, {"port": 80}]}]},
     spec(ingress=[allow("TCP", destination={"ports": ["http", "80:81"]})])),
    ("a port entry without port allows every port of its protocol",
     {"podSelector": {}, "policyTypes": ["Ingress"],
      "ingress": [{"ports": [{"port": 80}, {"protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}]},
     spec(ingress=[allow("TCP"), allow("UDP", destination={"ports": [53]})])),
    ("SCTP sorts first", {"podSelector": {}, "policyTypes": ["Ingress"],
                          "ingress": [{"ports": [{"port": 80}, {"port": 9, "protocol": "SCTP"}]}]},
     spec(ingress=[allow("SCTP", destination={"ports": [9]}), allow("TCP", destination={"ports": [80]})])),
    ("two peers × TCP and UDP: protocol-major order",
     {"podSelector": {}, "policyTypes": ["Ingress"],
      "ingress": [{"from": [{"podSelector": {"matchLabels": {"a": "1"}}},
                            {"podSelector": {"matchLabels": {"b": "2"}}}],
                   "ports": [{"port": 53, "protocol": "UDP"}, {"port": 80}]}]},
     spec(ingress=[allow("TCP", {"selector": f"{K8S} && a == '1'"}, {"ports": [80]}),
                   allow("TCP", {"selector": f"{K8S} && b == '2'"}, {"ports": [80]}),
                   allow("UDP", {"selector": f"{K8S} && a == '1'"}, {"ports": [53]}),
                   allow("UDP", {"selector": f"{K8S} && b == '2'"}, {"ports": [53]})])),
    ("an empty peer {} is every pod of the namespace",
     {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{}]}]},
     spec(ingress=[allow(source={"selector": K8S})])),
    ("Ingress and Egress types, no egress rules: egress denied",
     {"podSelector": {}, "policyTypes": ["Egress", "Ingress"], "ingress": [{}]},
     spec(types=("Ingress", "Egress"), ingress=[allow()])),
    ("no policyTypes: Ingress only even with egress rules (Calico's fallback)",
     {"podSelector": {}, "egress": [{}]}, spec(egress=[allow()])),
    ("rules in both directions",
     {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
      "ingress": [{"from": [{"podSelector": {}}]}], "egress": [{"to": [{"namespaceSelector": {}}]}]},
     spec(types=("Ingress", "Egress"), ingress=[allow(source={"selector": K8S})],
          egress=[allow(destination={"selector": K8S, "namespaceSelector": "all()"})])),
    ("a rule that cannot be converted is dropped, the rest kept",
     {"podSelector": {}, "policyTypes": ["Ingress"],
      "ingress": [{"ports": [{"port": "http", "endPort": 90}]}, {"ports": [{"port": 22}]}]},
     spec(ingress=[allow("TCP", destination={"ports": [22]})])),
]


@pytest.mark.parametrize(("k8s", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_network_policy_converts_as_calico_does(k8s: dict[str, Any], expected: dict[str, Any]) -> None:
    assert converted(k8s) == expected


def test_at_least_25_policy_cases() -> None:
    assert len(CASES) >= 25


def test_multiple_policies_add_up_as_separate_calico_policies() -> None:
    """e2e "should allow traffic only from ... multiple policies": each K8s policy is its own
    Calico policy at order 1000 (Felix ORs their allow rules); none replaces another."""
    first = convert.network_policy(knp({"podSelector": {}, "policyTypes": ["Ingress"],
                                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"a": "1"}}}]}]}, "a"))
    second = convert.network_policy(knp({"podSelector": {}, "policyTypes": ["Ingress"],
                                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"b": "2"}}}]}]}, "b"))
    assert (first.name, second.name) == ("knp.default.a", "knp.default.b")
    assert first.key() != second.key()
    assert first.spec["order"] == second.spec["order"] == 1000
    assert first.spec["ingress"][0]["source"]["selector"] != second.spec["ingress"][0]["source"]["selector"]


def test_policy_key_is_the_calico_one() -> None:
    policy = convert.network_policy(knp({"podSelector": {}}, "deny-all", "dev"))
    assert policy.key() == "/calico/resources/v3/projectcalico.org/networkpolicies/dev/knp.default.deny-all"
    assert isinstance(policy, NetworkPolicy)


def test_unknown_selector_operator_is_named() -> None:
    with pytest.raises(ValidationError, match=r"matchExpressions\[0\].operator.*'Gt'"):
        convert.label_selector({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, pod=True)


def test_namespace_becomes_kns_profile() -> None:
    profile = convert.namespace_to_profile({"metadata": {"name": "dev", "labels": {
        "team": "a", "kubernetes.io/metadata.name": "dev"}}})
    profile.validate()
    assert profile.to_json() == {
        "kind": "Profile", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "kns.dev"},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
                 "labelsToApply": {"pcns.team": "a", "pcns.kubernetes.io/metadata.name": "dev",
                                   "pcns.projectcalico.org/name": "dev"}}}


def test_service_account_becomes_ksa_profile_without_rules() -> None:
    profile = convert.service_account_to_profile({"metadata": {"name": "builder", "namespace": "dev",
                                                               "labels": {"role": "ci"}}})
    profile.validate()
    assert profile.name == "ksa.dev.builder"
    assert profile.spec == {"labelsToApply": {"pcsa.role": "ci", "pcsa.projectcalico.org/name": "builder"}}


def test_service_account_without_namespace_is_in_default() -> None:
    assert convert.service_account_to_profile({"metadata": {"name": "x"}}).name == "ksa.default.x"


def test_pod_endpoint_labels_and_profiles() -> None:
    pod = {"metadata": {"name": "web-0", "namespace": "dev", "labels": {"app": "web"}},
           "spec": {"nodeName": "n-1", "serviceAccountName": "builder"}}
    assert convert.pod_endpoint_labels(pod) == {
        "app": "web", "projectcalico.org/namespace": "dev", "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "builder"}
    assert convert.pod_profiles(pod) == ["kns.dev", "ksa.dev.builder"]
    assert convert.pod_wants_endpoint(pod)


def test_long_service_account_is_no_label() -> None:
    pod = {"metadata": {"name": "p", "namespace": "dev"}, "spec": {"serviceAccountName": "s" * 63}}
    assert "projectcalico.org/serviceaccount" not in convert.pod_endpoint_labels(pod)


def test_host_network_and_unscheduled_pods_get_no_endpoint() -> None:
    assert not convert.pod_wants_endpoint({"spec": {"nodeName": "n", "hostNetwork": True}})
    assert not convert.pod_wants_endpoint({"spec": {}})
