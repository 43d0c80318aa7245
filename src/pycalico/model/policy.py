"""Calico's policy kinds: NetworkPolicy, GlobalNetworkPolicy, Profile, NetworkSet,
GlobalNetworkSet, HostEndpoint, Tier (calico-policy.md §1).

JSON exactly as Calico stores it; the agent's policy calculation reads ``spec``
directly, so these classes own defaults, validation and a few typed accessors.
Every field Calico does not define is refused, with its full path named.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pycalico.errors import ValidationError
from pycalico.model import rules
from pycalico.model.resources import Resource

DEFAULT_TIER = "default"
TIER_LABEL = "projectcalico.org/tier"
NAMESPACE_LABEL = "projectcalico.org/namespace"
POLICY_TYPES = ("Ingress", "Egress")
PERFORMANCE_HINTS = ("AssumeNeededOnEveryNode",)
TIER_ACTIONS = ("Deny", "Pass")
# The tiers Calico's client creates (EnsureInitialized): name -> (order, defaultAction), pinned by validation.
BUILTIN_TIERS: dict[str, tuple[float, str]] = {
    "kube-admin": (1_000.0, "Pass"),
    DEFAULT_TIER: (1_000_000.0, "Deny"),
    "kube-baseline": (10_000_000.0, "Pass"),
}

_L = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# libcalico-go validator: networkPolicyNameRegex / globalNetworkPolicyNameRegex.
NP_NAME_RE = re.compile(rf"({_L})(\.{_L})?|(knp|ossg)\.default\.{_L}(\.{_L})*")
GNP_NAME_RE = re.compile(rf"({_L}\.)?{_L}")
NP_NAME_ALLOWED = "a DNS label, or two joined by '.', or knp.default.<name> / ossg.default.<name> " \
                  "(lowercase letters, digits and '-', at most 253 characters)"
GNP_NAME_ALLOWED = "a DNS label, optionally after one 'label.' (lowercase letters, digits and '-', " \
                   "at most 253 characters)"


class _StrictResource(Resource):
    """A kind whose every field is checked: the base refuses unknown top-level and
    metadata fields (``model.fields``); the kind walks its own spec, refusing unknown
    fields at every depth as it validates their values."""

    SPEC_FIELDS: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        super().validate()
        rules.check_labels("metadata.labels", self.metadata.get("labels"))
        rules.check_annotations("metadata.annotations", self.metadata.get("annotations"))
        rules.check_fields("spec", self.spec, self.SPEC_FIELDS)


# ---- policies ------------------------------------------------------------------------------
class _Policy(_StrictResource):
    NAME_RE: ClassVar[re.Pattern[str]] = NP_NAME_RE
    NAME_ALLOWED: ClassVar[str] = NP_NAME_ALLOWED
    COMMON_FIELDS: ClassVar[tuple[str, ...]] = ("tier", "order", "selector", "types", "ingress", "egress",
                                                "serviceAccountSelector", "performanceHints")

    # ---- accessors the agent uses --------------------------------------------------------
    @property
    def tier(self) -> str:
        return str(self.spec.get("tier") or DEFAULT_TIER)

    @property
    def order(self) -> float | None:
        """None means "last" (+infinity) when sorting."""
        value = self.spec.get("order")
        return None if value is None else float(value)

    @property
    def selector(self) -> str:
        return str(self.spec.get("selector") or "")

    @property
    def types(self) -> list[str]:
        """As stored; empty only for a policy written straight into etcd, which Felix
        treats as governing both directions."""
        return [str(t) for t in self.spec.get("types") or []]

    @property
    def ingress(self) -> list[dict[str, Any]]:
        return list(self.spec.get("ingress") or [])

    @property
    def egress(self) -> list[dict[str, Any]]:
        return list(self.spec.get("egress") or [])

    # ---- defaults and validation ---------------------------------------------------------
    def apply_defaults(self) -> None:
        """Calico's client: ``types`` from the rules present (api/pkg/defaults), the tier
        label, and (etcd mode, CRD default) ``spec.tier: default``."""
        spec = self.spec
        if not spec.get("types"):
            egress, ingress = spec.get("egress"), spec.get("ingress")
            if not egress:
                spec["types"] = ["Ingress"]
            elif not ingress:
                spec["types"] = ["Egress"]
            else:
                spec["types"] = ["Ingress", "Egress"]
        if not spec.get("tier"):
            spec["tier"] = DEFAULT_TIER
        labels = self.metadata.get("labels")
        if isinstance(labels, dict) and isinstance(spec["tier"], str):
            labels[TIER_LABEL] = spec["tier"]
        elif labels is None and isinstance(spec["tier"], str):
            self.metadata["labels"] = {TIER_LABEL: spec["tier"]}

    def _validate_name(self) -> None:
        name = self.metadata.get("name")
        if not isinstance(name, str) or len(name) > 253 or not self.NAME_RE.fullmatch(name):
            raise ValidationError("metadata.name", name, self.NAME_ALLOWED)

    def validate(self) -> None:
        super().validate()
        spec = self.spec
        tier = spec.get("tier")
        if tier:
            rules.check_name("spec.tier", tier, rules.DNS_LABEL_RE, "the name of a Tier (" +
                             rules.DNS_LABEL_ALLOWED + ")", 63)
        rules.check_number("spec.order", spec.get("order"), "a number (lower orders apply first)")
        for field in ("selector", "serviceAccountSelector"):
            rules.check_selector(f"spec.{field}", spec.get(field))
        types = rules.check_list("spec.types", spec.get("types") or [], "policy types Ingress, Egress")
        for i, kind in enumerate(types):
            if kind not in POLICY_TYPES:
                raise ValidationError(f"spec.types[{i}]", kind, "Ingress|Egress")
            if kind in types[:i]:
                raise ValidationError(f"spec.types[{i}]", kind, "each of Ingress, Egress at most once",
                                      reason=f"{kind!r} type specified more than once")
        for direction in ("ingress", "egress"):
            rules.check_rules(f"spec.{direction}", spec.get(direction), direction=direction, scope=self.KIND)
        hints = rules.check_list("spec.performanceHints", spec.get("performanceHints") or [], "hints")
        for i, hint in enumerate(hints):
            if hint not in PERFORMANCE_HINTS or hint in hints[:i]:
                raise ValidationError(f"spec.performanceHints[{i}]", hint, "|".join(PERFORMANCE_HINTS) + ", once")


class NetworkPolicy(_Policy):
    KIND = "NetworkPolicy"
    PLURAL = "networkpolicies"
    NAMESPACED = True
    SPEC_FIELDS = _Policy.COMMON_FIELDS
    GLOBAL_ONLY_FIELDS = ("namespaceSelector", "applyOnForward", "preDNAT", "doNotTrack")

    def validate(self) -> None:
        for field in self.GLOBAL_ONLY_FIELDS:
            if field in self.spec:
                raise ValidationError(f"spec.{field}", self.spec[field], "one of " + ", ".join(self.SPEC_FIELDS),
                                      reason="only a GlobalNetworkPolicy has this field")
        super().validate()


class GlobalNetworkPolicy(_Policy):
    KIND = "GlobalNetworkPolicy"
    PLURAL = "globalnetworkpolicies"
    NAME_RE = GNP_NAME_RE
    NAME_ALLOWED = GNP_NAME_ALLOWED
    SPEC_FIELDS = _Policy.COMMON_FIELDS + NetworkPolicy.GLOBAL_ONLY_FIELDS

    @property
    def namespace_selector(self) -> str:
        return str(self.spec.get("namespaceSelector") or "")

    @property
    def do_not_track(self) -> bool:
        return bool(self.spec.get("doNotTrack", False))

    @property
    def pre_dnat(self) -> bool:
        return bool(self.spec.get("preDNAT", False))

    @property
    def apply_on_forward(self) -> bool:
        return bool(self.spec.get("applyOnForward", False))

    def validate(self) -> None:
        super().validate()
        spec = self.spec
        rules.check_selector("spec.namespaceSelector", spec.get("namespaceSelector"))
        for field in ("applyOnForward", "preDNAT", "doNotTrack"):
            rules.check_bool(f"spec.{field}", spec.get(field))
        if self.do_not_track and self.pre_dnat:
            raise ValidationError("spec.preDNAT", True, "false when spec.doNotTrack is true",
                                  reason="preDNAT and doNotTrack cannot both be true")
        if self.pre_dnat and spec.get("egress"):
            raise ValidationError("spec.egress", spec["egress"], "no egress rules in a preDNAT policy")
        if self.pre_dnat and "Egress" in self.types:
            raise ValidationError("spec.types", spec["types"], "[Ingress] in a preDNAT policy",
                                  reason="a preDNAT policy cannot have the Egress type")
        if (self.do_not_track or self.pre_dnat) and not self.apply_on_forward:
            raise ValidationError("spec.applyOnForward", spec.get("applyOnForward"),
                                  "true when preDNAT or doNotTrack is true")


# ---- profiles, sets, host endpoints, tiers ----------------------------------------------------
class Profile(_StrictResource):
    KIND = "Profile"
    PLURAL = "profiles"
    SPEC_FIELDS = ("ingress", "egress", "labelsToApply")

    @property
    def labels_to_apply(self) -> dict[str, str]:
        return dict(self.spec.get("labelsToApply") or {})

    def validate(self) -> None:
        super().validate()
        for direction in ("ingress", "egress"):
            rules.check_rules(f"spec.{direction}", self.spec.get(direction), direction=direction, scope=self.KIND)
        rules.check_labels("spec.labelsToApply", self.spec.get("labelsToApply"))


class _NetworkSetBase(_StrictResource):
    SPEC_FIELDS = ("nets",)

    @property
    def nets(self) -> list[str]:
        return [str(n) for n in self.spec.get("nets") or []]

    def validate(self) -> None:
        super().validate()
        if NAMESPACE_LABEL in (self.metadata.get("labels") or {}):
            raise ValidationError(f"metadata.labels.{NAMESPACE_LABEL}", self.metadata["labels"][NAMESPACE_LABEL],
                                  "labels other than projectcalico.org/namespace (Calico sets it itself)")
        for i, net in enumerate(rules.check_list("spec.nets", self.spec.get("nets") or [], "CIDRs")):
            rules.check_cidr(f"spec.nets[{i}]", net, strict=False, allow_ip=True)


class NetworkSet(_NetworkSetBase):
    KIND = "NetworkSet"
    PLURAL = "networksets"
    NAMESPACED = True


class GlobalNetworkSet(_NetworkSetBase):
    KIND = "GlobalNetworkSet"
    PLURAL = "globalnetworksets"


_INTERFACE_RE = re.compile(r"[a-zA-Z0-9_.-]{1,15}")


class HostEndpoint(_StrictResource):
    KIND = "HostEndpoint"
    PLURAL = "hostendpoints"
    SPEC_FIELDS = ("node", "interfaceName", "expectedIPs", "profiles", "ports")

    @property
    def node(self) -> str:
        return str(self.spec.get("node") or "")

    @property
    def interface_name(self) -> str:
        return str(self.spec.get("interfaceName") or "")

    @property
    def expected_ips(self) -> list[str]:
        return [str(ip) for ip in self.spec.get("expectedIPs") or []]

    @property
    def profiles(self) -> list[str]:
        return [str(p) for p in self.spec.get("profiles") or []]

    def validate(self) -> None:
        super().validate()
        spec = self.spec
        if not spec.get("node"):
            raise ValidationError("spec.node", spec.get("node"), "the name of the node the interface is on",
                                  reason="node must be specified")
        rules.check_name("spec.node", spec["node"])
        interface = spec.get("interfaceName")
        if interface and (not isinstance(interface, str) or not (interface == "*" or
                                                                 _INTERFACE_RE.fullmatch(interface))):
            raise ValidationError("spec.interfaceName", interface,
                                  "'*' (every host interface) or an interface name of 1-15 of a-z, A-Z, 0-9, _ . -")
        ips = rules.check_list("spec.expectedIPs", spec.get("expectedIPs") or [], "IP addresses")
        for i, ip in enumerate(ips):
            rules.check_ip(f"spec.expectedIPs[{i}]", ip)
        if not interface and not ips:
            raise ValidationError("spec.interfaceName", interface, "an interface name, '*', or spec.expectedIPs",
                                  reason="at least one of interfaceName or expectedIPs must be specified")
        for i, profile in enumerate(rules.check_list("spec.profiles", spec.get("profiles") or [], "profile names")):
            rules.check_name(f"spec.profiles[{i}]", profile)
        rules.check_endpoint_ports("spec.ports", spec.get("ports"), workload=False)


class Tier(_StrictResource):
    KIND = "Tier"
    PLURAL = "tiers"
    SPEC_FIELDS = ("order", "defaultAction")
    EXTRA_TOP_LEVEL_FIELDS = ("status",)

    @property
    def order(self) -> float | None:
        """None means "after every tier with an order"."""
        value = self.spec.get("order")
        return None if value is None else float(value)

    @property
    def default_action(self) -> str:
        """Deny or Pass; Felix treats anything but Pass as Deny."""
        return "Pass" if self.spec.get("defaultAction") == "Pass" else "Deny"

    def apply_defaults(self) -> None:
        self.spec.setdefault("defaultAction", "Deny")  # the CRD default Calico's client applies in etcd mode

    def _validate_name(self) -> None:
        rules.check_name("metadata.name", self.metadata.get("name"), rules.DNS_LABEL_RE,
                         "a tier name: " + rules.DNS_LABEL_ALLOWED + " (no dots)", 63)

    def validate(self) -> None:
        super().validate()
        order = rules.check_number("spec.order", self.spec.get("order"), "a number, or null for last")
        action = self.spec.get("defaultAction")
        if action is not None and action not in TIER_ACTIONS:
            raise ValidationError("spec.defaultAction", action, "|".join(TIER_ACTIONS))
        pinned = BUILTIN_TIERS.get(self.name)
        if pinned and order != pinned[0]:
            raise ValidationError("spec.order", self.spec.get("order"), f"{pinned[0]:g}",
                                  reason=f"the built-in tier {self.name!r} has a fixed order")
        if pinned and (action or "Deny") != pinned[1]:
            raise ValidationError("spec.defaultAction", action, pinned[1],
                                  reason=f"the built-in tier {self.name!r} has a fixed default action")


def builtin_tier(name: str) -> Tier:
    """One of the tiers Calico's client creates, as it creates it."""
    order, action = BUILTIN_TIERS[name]
    return Tier(name, {"order": int(order), "defaultAction": action})  # JSON 1000000, as Go writes it


POLICY_KINDS: tuple[type[Resource], ...] = (
    NetworkPolicy, GlobalNetworkPolicy, Profile, NetworkSet, GlobalNetworkSet, HostEndpoint, Tier,
)
