"""Calico rules → backend-neutral matches (calico-policy.md §1.3, §3.1, §4.8).

The result still names endpoints by (rewritten) selector and named port; the
resolver turns those into IP sets. IPv4 only: a rule for IPv6 (by ipVersion,
ICMPv6, or nets that are all IPv6) is skipped, as Felix skips it per family.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from pycalico.agent.policy.selectors import entity_selectors

ACTIONS = {"Allow": "allow", "Deny": "deny", "Pass": "pass", "Log": "log"}
PROTOCOL_NAMES = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmpv6", "sctp": "sctp",
                  "udplite": "udplite"}
_RANGE = re.compile(r"(\d+):(\d+)")


@dataclass(frozen=True)
class Side:
    nets: tuple[str, ...] = ()
    not_nets: tuple[str, ...] = ()
    selector: str | None = None
    not_selector: str | None = None
    ports: tuple[str, ...] = ()  # "80" or "8080:8090"
    named_ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    not_named_ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    action: str
    protocol: str | None = None
    not_protocol: str | None = None
    icmp: tuple[int, int | None] | None = None
    not_icmp: tuple[int, int | None] | None = None
    src: Side = Side()
    dst: Side = Side()
    comment: str = ""


def protocol(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}.get(value, str(value))
    text = str(value).strip().lower()
    if text.isdigit():
        return protocol(int(text))
    return PROTOCOL_NAMES.get(text, text)


def _v4_nets(values: Any) -> tuple[tuple[str, ...], bool]:
    """(IPv4 networks, whether the list named only other-family networks)."""
    v4, other = [], False
    for value in values or []:
        try:
            net = ipaddress.ip_network(str(value), strict=False)
        except ValueError:
            continue
        if net.version == 4:
            v4.append(str(net))
        else:
            other = True
    return tuple(v4), other and not v4


def _ports(values: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    numeric, named = [], []
    for value in values or []:
        if isinstance(value, int) and not isinstance(value, bool):
            numeric.append(str(value))
            continue
        text = str(value)
        m = _RANGE.fullmatch(text)
        if text.isdigit():
            numeric.append(text)
        elif m:
            numeric.append(text if m.group(1) != m.group(2) else m.group(1))
        else:
            named.append(text)
    return tuple(numeric), tuple(named)


_EMPTY_SIDE = Side()


def _side(entity: dict[str, Any] | None, namespace: str | None) -> tuple[Side, bool]:
    if not entity:
        return _EMPTY_SIDE, False
    nets, nets_other_family = _v4_nets(entity["nets"]) if "nets" in entity else ((), False)
    not_nets = _v4_nets(entity["notNets"])[0] if "notNets" in entity else ()
    positive, negative = entity_selectors(entity, namespace)
    ports, named = _ports(entity["ports"]) if "ports" in entity else ((), ())
    not_ports, not_named = _ports(entity["notPorts"]) if "notPorts" in entity else ((), ())
    side = Side(nets, not_nets, positive, negative, ports, named, not_ports, not_named)
    return side, nets_other_family


def _icmp(value: Any) -> tuple[int, int | None] | None:
    if not isinstance(value, dict) or value.get("type") is None:
        return None
    code = value.get("code")
    return int(value["type"]), (int(code) if code is not None else None)


def convert(rule: dict[str, Any], namespace: str | None, comment: str = "") -> Rule | None:
    """The IPv4 form of one Calico rule, or None when it does not apply to IPv4."""
    if rule.get("ipVersion") == 6:
        return None
    proto = protocol(rule.get("protocol"))
    if proto == "icmpv6":
        return None
    src, src_v6_only = _side(rule.get("source"), namespace)
    dst, dst_v6_only = _side(rule.get("destination"), namespace)
    if src_v6_only or dst_v6_only:
        return None
    if "0.0.0.0/0" in src.not_nets or "0.0.0.0/0" in dst.not_nets:
        return None  # a negated catch-all can never match: Felix drops the rule
    return Rule(
        action=ACTIONS.get(str(rule.get("action")), "deny"),
        protocol=proto,
        not_protocol=protocol(rule.get("notProtocol")),
        icmp=_icmp(rule.get("icmp")),
        not_icmp=_icmp(rule.get("notICMP")),
        src=src,
        dst=dst,
        comment=comment,
    )
