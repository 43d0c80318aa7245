"""What selectors see: every endpoint and network set of the cluster with the labels
Felix gives it (calico-policy.md §2.2, §2.6).

Workload endpoints carry their own labels (less any ``pcns.``/``pcsa.`` label
stored on them, so a pod cannot claim another namespace), the implicit
namespace/orchestrator/service-account labels, and the ``labelsToApply`` of
their profiles (own labels win; the first profile that has a key wins).
NetworkSets inherit from ``kns.<namespace>``; GlobalNetworkSets and
HostEndpoints carry their own labels (+ HEP profiles).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pycalico.agent.policy.selectors import (
    NAMESPACE_LABEL,
    NS_PREFIX,
    ORCHESTRATOR_LABEL,
    SA_PREFIX,
    SERVICE_ACCOUNT_LABEL,
)


@dataclass(frozen=True)
class NamedPort:
    name: str
    protocol: str  # tcp | udp | sctp
    port: int


@dataclass(frozen=True)
class Item:
    """One thing a selector can match: its labels, its addresses (CIDRs) and named ports."""

    key: str
    labels: Mapping[str, str]
    nets: tuple[str, ...]
    ports: tuple[NamedPort, ...] = ()


def _host_v4(text: str) -> bool:
    """``a.b.c.d/32`` in canonical form (what endpoints carry), checked without ipaddress."""
    if not text.endswith("/32"):
        return False
    parts = text[:-3].split(".")
    return len(parts) == 4 and all(p.isdigit() and (p == "0" or p[0] != "0") and int(p) < 256 for p in parts)


def _nets(values: Iterable[Any]) -> tuple[str, ...]:
    out = []
    for value in values:
        text = str(value)
        if _host_v4(text):
            out.append(text)
            continue
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue  # Felix drops what it cannot parse
        if net.version == 4:
            out.append(str(net))
    return tuple(sorted(set(out)))


def _ports(spec: Mapping[str, Any]) -> tuple[NamedPort, ...]:
    out = []
    for port in spec.get("ports") or []:
        if not isinstance(port, dict) or not port.get("name"):
            continue
        try:
            out.append(NamedPort(str(port["name"]), str(port.get("protocol") or "TCP").lower(), int(port["port"])))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(out)


def inherit(own: Mapping[str, str], profiles: Iterable[str],
            profile_labels: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    labels = dict(own)
    for name in profiles:
        for key, value in (profile_labels.get(name) or {}).items():
            labels.setdefault(key, value)
    return labels


def workload_item(key: str, wep: Any, profile_labels: Mapping[str, Mapping[str, str]]) -> Item:
    spec = wep.spec
    own = {k: v for k, v in (wep.metadata.get("labels") or {}).items()
           if not k.startswith((NS_PREFIX, SA_PREFIX))}
    if wep.namespace:
        own[NAMESPACE_LABEL] = wep.namespace
    if spec.get("orchestrator"):
        own.setdefault(ORCHESTRATOR_LABEL, str(spec["orchestrator"]))
    if spec.get("serviceAccountName"):
        own[SERVICE_ACCOUNT_LABEL] = str(spec["serviceAccountName"])
    labels = inherit(own, [str(p) for p in spec.get("profiles") or []], profile_labels)
    return Item(key, labels, _nets(spec.get("ipNetworks") or []), _ports(spec))


def network_set_item(key: str, netset: Any, profile_labels: Mapping[str, Mapping[str, str]]) -> Item:
    own = dict(netset.metadata.get("labels") or {})
    profiles: list[str] = []
    if netset.namespace:
        own[NAMESPACE_LABEL] = netset.namespace
        profiles = [f"kns.{netset.namespace}"]
    return Item(key, inherit(own, profiles, profile_labels), _nets(netset.spec.get("nets") or []))


def host_endpoint_item(key: str, hep: Any, profile_labels: Mapping[str, Mapping[str, str]]) -> Item:
    own = dict(hep.metadata.get("labels") or {})
    labels = inherit(own, [str(p) for p in hep.spec.get("profiles") or []], profile_labels)
    return Item(key, labels, _nets(hep.spec.get("expectedIPs") or []), _ports(hep.spec))
