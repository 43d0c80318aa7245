"""Kubernetes objects → Calico records, with Calico's own conversion rules
(calico-kubernetes.md §3.3-3.6): NetworkPolicy → ``knp.default.<name>``, Namespace →
Profile ``kns.<ns>``, ServiceAccount → Profile ``ksa.<ns>.<sa>``, Pod → WorkloadEndpoint labels.

Input is the JSON the API server returns (camelCase dicts); output is pycalico's model.
Pure functions: no I/O, so the controllers and the CNI's Kubernetes mode can share them.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pycalico.errors import ValidationError
from pycalico.model import NetworkPolicy, Profile

log = logging.getLogger(__name__)

KNP_PREFIX = "knp.default."
NAMESPACE_PROFILE_PREFIX = "kns."
SERVICE_ACCOUNT_PROFILE_PREFIX = "ksa."
NAMESPACE_LABEL_PREFIX = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
NAME_LABEL = "projectcalico.org/name"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
NAMESPACE_LABEL = "projectcalico.org/namespace"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
ORCHESTRATOR_TERM = f"{ORCHESTRATOR_LABEL} == 'k8s'"
KNP_ORDER = 1000  # every Kubernetes policy sits at order 1000 in the default tier
UNSCHEDULED_NODE = "unknown.node"


# ---- selectors ------------------------------------------------------------------------------
def label_selector(selector: Mapping[str, Any] | None, *, pod: bool) -> str:
    """A Kubernetes LabelSelector as a Calico selector. Pod selectors always carry the
    orchestrator term (so host endpoints and network sets are never matched); a present but
    empty namespace selector means every namespace (``all()``), an absent one ``""``."""
    terms = [ORCHESTRATOR_TERM] if pod else []
    if selector is None:
        return " && ".join(terms)
    match_labels = dict(selector.get("matchLabels") or {})
    expressions = list(selector.get("matchExpressions") or [])
    if not pod and not match_labels and not expressions:
        return "all()"
    terms += [f"{key} == '{match_labels[key]}'" for key in sorted(match_labels)]
    for i, expr in enumerate(expressions):
        key, operator = expr.get("key"), expr.get("operator")
        values = "', '".join(str(v) for v in expr.get("values") or [])
        if operator == "In":
            terms.append(f"{key} in {{ '{values}' }}")
        elif operator == "NotIn":
            terms.append(f"{key} not in {{ '{values}' }}")
        elif operator == "Exists":
            terms.append(f"has({key})")
        elif operator == "DoesNotExist":
            terms.append(f"! has({key})")
        else:
            raise ValidationError(f"matchExpressions[{i}].operator", operator, "In, NotIn, Exists, DoesNotExist")
    return " && ".join(terms)


# ---- ports ----------------------------------------------------------------------------------
Port = int | str  # 80, "80:82" or a named port "http"


def _port_entry(port: Mapping[str, Any]) -> tuple[str, list[Port] | None]:
    """(protocol, ports) of one NetworkPolicyPort; ports None means every port of the protocol."""
    protocol = str(port.get("protocol") or "TCP")
    value = port.get("port")
    if value is None:
        return protocol, None
    end = port.get("endPort")
    if isinstance(value, str) and not value.isdigit():
        if end is not None:
            raise ValidationError("ports.endPort", end, "no endPort with a named port",
                                  reason=f"a range needs a numeric start, not {value!r}")
        return protocol, [value]
    start = int(value)
    if not 1 <= start <= 65535:
        raise ValidationError("ports.port", value, "a port number 1-65535 or a port name")
    if end is None:
        return protocol, [start]
    end = int(end)
    if not start <= end <= 65535:
        raise ValidationError("ports.endPort", end, f"a port number from {start} to 65535")
    return protocol, [f"{start}:{end}"]


def _numbers(port: Port) -> range:
    if isinstance(port, int):
        return range(port, port + 1)
    low, _, high = port.partition(":")
    return range(int(low), int(high) + 1)


def simplify_ports(ports: list[Port]) -> list[Port]:
    """Named ports as given, then the numeric ones merged into the fewest ranges
    (80, 81, 82, 8080 → "80:82", 8080), as Calico's SimplifyPorts does."""
    if len(ports) <= 1:
        return ports
    named = [p for p in ports if isinstance(p, str) and not p[:1].isdigit()]
    numbers = sorted({n for p in ports if p not in named for n in _numbers(p)})
    if len(numbers) <= 1:
        return ports
    out: list[Port] = list(named)
    start = prev = numbers[0]
    for n in numbers[1:] + [-1]:
        if n == prev + 1:
            prev = n
            continue
        out.append(start if start == prev else f"{start}:{prev}")
        start = prev = n
    return out


def _ports_by_protocol(ports: list[Mapping[str, Any]] | None) -> dict[str, list[Port] | None]:
    """Protocol → ports (None: all ports); {"": None} when the rule names no ports at all."""
    if not ports:
        return {"": None}
    grouped: dict[str, list[Port] | None] = {}
    for port in ports:
        protocol, numbers = _port_entry(port)
        if numbers is None:
            grouped[protocol] = None  # every port of this protocol absorbs the listed ones
        elif protocol not in grouped:
            grouped[protocol] = list(numbers)
        elif grouped[protocol] is not None:
            grouped[protocol] = [*(grouped[protocol] or []), *numbers]
    return grouped


# ---- peers and rules ------------------------------------------------------------------------
def _normalised_cidr(field: str, cidr: Any) -> str:
    try:
        return str(ipaddress.ip_network(str(cidr), strict=False))
    except ValueError:
        raise ValidationError(field, cidr, "a CIDR such as 10.0.0.0/8") from None


def _peer_entity(peer: Mapping[str, Any] | None) -> dict[str, Any]:
    if peer is None:
        return {}
    block = peer.get("ipBlock")
    if block is not None:
        entity: dict[str, Any] = {"nets": [_normalised_cidr("ipBlock.cidr", block.get("cidr"))]}
        excepts = [_normalised_cidr("ipBlock.except", c) for c in block.get("except") or []]
        if excepts:
            entity["notNets"] = excepts
        return entity
    entity = {"selector": label_selector(peer.get("podSelector"), pod=True)}
    namespaces = label_selector(peer.get("namespaceSelector"), pod=False)
    if namespaces:
        entity["namespaceSelector"] = namespaces
    return entity


def rule_to_calico(rule: Mapping[str, Any], *, ingress: bool) -> list[dict[str, Any]]:
    """One Kubernetes ingress/egress rule as Calico Allow rules: one per protocol (sorted)
    × peer (in order). A missing or empty ``from``/``to`` is any peer; missing ``ports`` any port."""
    peers: list[Mapping[str, Any] | None] = list(rule.get("from" if ingress else "to") or []) or [None]
    out: list[dict[str, Any]] = []
    for protocol, ports in sorted(_ports_by_protocol(rule.get("ports")).items()):
        for peer in peers:
            entity = _peer_entity(peer)
            calico: dict[str, Any] = {"action": "Allow"}
            if protocol:
                calico["protocol"] = protocol
            destination = {} if ingress else dict(entity)
            if ports is not None:
                destination["ports"] = simplify_ports(ports)
            calico["source"] = entity if ingress else {}
            calico["destination"] = destination
            out.append(calico)
    return out


def policy_types(spec: Mapping[str, Any]) -> list[str]:
    """Ingress then Egress as listed; none listed ⇒ Ingress only (Calico's fallback: the API
    server's own defaulting is what adds Egress for a policy with egress rules)."""
    listed = set(spec.get("policyTypes") or [])
    types = [t for t in ("Ingress", "Egress") if t in listed]
    if "Egress" not in listed and spec.get("egress"):
        log.warning("NetworkPolicy has egress rules but policyTypes lacks Egress: its egress rules are ignored")
    return types or ["Ingress"]


def network_policy(knp: Mapping[str, Any]) -> NetworkPolicy:
    """A Kubernetes NetworkPolicy as Calico's ``knp.default.<name>`` in the same namespace.
    A rule that cannot be converted is dropped (and logged), the rest kept, as Calico does."""
    meta = knp.get("metadata") or {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    if not name or not namespace:
        raise ValidationError("metadata", {"name": name, "namespace": namespace}, "a name and a namespace")
    spec = knp.get("spec") or {}
    calico: dict[str, Any] = {"tier": "default", "order": KNP_ORDER,
                              "selector": label_selector(spec.get("podSelector"), pod=True)}
    for direction, ingress in (("ingress", True), ("egress", False)):
        converted: list[dict[str, Any]] = []
        for i, rule in enumerate(spec.get(direction) or []):
            try:
                converted += rule_to_calico(rule, ingress=ingress)
            except ValidationError as exc:
                log.warning("NetworkPolicy %s/%s: dropping %s rule %d: %s", namespace, name, direction, i, exc)
        if converted:
            calico[direction] = converted
    calico["types"] = policy_types(spec)
    return NetworkPolicy(KNP_PREFIX + name, calico, namespace=namespace)


# ---- profiles -------------------------------------------------------------------------------
def namespace_profile_name(namespace: str) -> str:
    return NAMESPACE_PROFILE_PREFIX + namespace


def service_account_profile_name(namespace: str, service_account: str) -> str:
    return f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace or 'default'}.{service_account}"


def _prefixed(prefix: str, labels: Mapping[str, str] | None, name: str) -> dict[str, str]:
    out = {prefix + k: str(v) for k, v in (labels or {}).items()}
    out[prefix + NAME_LABEL] = name
    return out


def namespace_to_profile(ns: Mapping[str, Any]) -> Profile:
    """``kns.<ns>``: allows everything both ways and gives its endpoints ``pcns.`` labels."""
    meta = ns.get("metadata") or {}
    name = str(meta.get("name") or "")
    return Profile(namespace_profile_name(name), {
        "ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
        "labelsToApply": _prefixed(NAMESPACE_LABEL_PREFIX, meta.get("labels"), name)})


def service_account_to_profile(sa: Mapping[str, Any]) -> Profile:
    """``ksa.<ns>.<sa>``: no rules (it never allows anything by itself), ``pcsa.`` labels only."""
    meta = sa.get("metadata") or {}
    name = str(meta.get("name") or "")
    return Profile(service_account_profile_name(str(meta.get("namespace") or ""), name),
                   {"labelsToApply": _prefixed(SERVICE_ACCOUNT_LABEL_PREFIX, meta.get("labels"), name)})


# ---- pods -----------------------------------------------------------------------------------
def pod_wants_endpoint(pod: Mapping[str, Any]) -> bool:
    """Calico makes endpoints only for scheduled pods on the pod network."""
    spec = pod.get("spec") or {}
    return bool(spec.get("nodeName")) and not spec.get("hostNetwork")


def pod_service_account(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("serviceAccountName") or "")


def pod_endpoint_labels(pod: Mapping[str, Any]) -> dict[str, str]:
    """The labels Calico's pod conversion gives the WorkloadEndpoint: the pod's own plus the
    namespace, the orchestrator and (when short enough to be a label value) the service account."""
    meta = pod.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels[NAMESPACE_LABEL] = str(meta.get("namespace") or "")
    labels[ORCHESTRATOR_LABEL] = "k8s"
    sa = pod_service_account(pod)
    if sa and len(sa) < 63:
        labels[SERVICE_ACCOUNT_LABEL] = sa
    return labels


def pod_profiles(pod: Mapping[str, Any]) -> list[str]:
    """``kns.<ns>`` and, with a service account, ``ksa.<ns>.<sa>`` (for the CNI's Kubernetes mode)."""
    namespace = str((pod.get("metadata") or {}).get("namespace") or "")
    out = [namespace_profile_name(namespace)]
    sa = pod_service_account(pod)
    if sa:
        out.append(service_account_profile_name(namespace, sa))
    return out


def pod_ips(pod: Mapping[str, Any]) -> set[str]:
    """The addresses kubelet reported (empty until the CNI ADD finished)."""
    status = pod.get("status") or {}
    ips = {str(item.get("ip")) for item in status.get("podIPs") or [] if item.get("ip")}
    if status.get("podIP"):
        ips.add(str(status["podIP"]))
    return ips


def owned(names: Iterable[str], prefix: str) -> list[str]:
    return [n for n in names if n.startswith(prefix)]
