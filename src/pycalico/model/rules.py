"""Validation of Calico policy rules and the small field types the policy kinds share
(calico-policy.md §1.2–1.4; libcalico-go ``validator/v3``, ``api/.../policy_common.go``,
``numorstring``). Every error names the full field path, e.g.
``spec.ingress[0].destination.ports[1]``; every unknown field is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pycalico.errors import ValidationError
from pycalico.model import selector

ACTIONS = ("Allow", "Deny", "Log", "Pass")
PROTOCOLS: Mapping[str, int] = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
PORT_PROTOCOLS = (6, 17, 132)  # TCP, UDP, SCTP: the protocols that have ports
PROTOCOL_ALLOWED = "TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a protocol number from 1 to 255"
PORT_ALLOWED = "a port 1-65535, a range 'min:max' with min <= max, or a port name matching ^[a-zA-Z0-9_.-]{1,128}$"
MAX_SELECTOR_LENGTH = 1024  # the CRD's maxLength on every selector field
MAX_RULES = 1024

RULE_FIELDS = ("action", "ipVersion", "protocol", "notProtocol", "icmp", "notICMP", "source", "destination",
               "http", "metadata")
ENTITY_FIELDS = ("nets", "notNets", "selector", "notSelector", "namespaceSelector", "ports", "notPorts",
                 "serviceAccounts", "services")
ICMP_FIELDS = ("type", "code")
SERVICE_ACCOUNT_FIELDS = ("names", "selector")
SERVICE_FIELDS = ("name", "namespace")
HTTP_FIELDS = ("methods", "paths")
HTTP_PATH_FIELDS = ("exact", "prefix")
RULE_METADATA_FIELDS = ("annotations",)

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL_RE = re.compile(_LABEL)
DNS_SUBDOMAIN_RE = re.compile(_LABEL + r"(\." + _LABEL + ")*")
DNS_LABEL_ALLOWED = "a DNS label: lowercase letters, digits and '-', starting and ending alphanumeric, " \
                    "at most 63 characters"
DNS_SUBDOMAIN_ALLOWED = "lowercase letters, digits, '-' and '.', starting and ending alphanumeric, " \
                        "at most 253 characters"
_PORT_NAME_RE = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
_RANGE_RE = re.compile(r"(\d+):(\d+)")
_IANA_PORT_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_QUALIFIED_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE_RE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
QUALIFIED_NAME_ALLOWED = "a qualified name: an optional DNS-subdomain prefix and '/', then at most 63 of " \
                         "letters, digits, '-', '_' and '.', starting and ending alphanumeric"


# ---- generic shapes ----------------------------------------------------------------------
def check_fields(path: str, value: Any, allowed: Iterable[str]) -> dict[str, Any]:
    """``value`` as an object whose every field is in ``allowed``."""
    names = tuple(allowed)
    if not isinstance(value, dict):
        raise ValidationError(path, value, "an object with fields " + ", ".join(names))
    for name, item in value.items():
        if name not in names:
            raise ValidationError(f"{path}.{name}", item, "one of " + ", ".join(names), reason="unknown field")
    return value


def check_list(path: str, value: Any, what: str, *, max_items: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise ValidationError(path, value, f"a list of {what}")
    if max_items is not None and len(value) > max_items:
        raise ValidationError(path, f"{len(value)} items", f"at most {max_items} {what}")
    return value


def check_bool(path: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValidationError(path, value, "true or false")


def check_number(path: str, value: Any, allowed: str = "a number") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(path, value, allowed)
    return float(value)


def check_int(path: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(path, value, f"an integer from {low} to {high}")
    return value


def check_name(path: str, value: Any, regex: re.Pattern[str] = DNS_SUBDOMAIN_RE,
               allowed: str = DNS_SUBDOMAIN_ALLOWED, max_length: int = 253) -> str:
    if not isinstance(value, str) or len(value) > max_length or not regex.fullmatch(value):
        raise ValidationError(path, value, allowed)
    return value


def check_selector(path: str, value: Any, *, allow_global: bool = False) -> None:
    if value is None or value == "":
        return
    if isinstance(value, str) and len(value) > MAX_SELECTOR_LENGTH:
        raise ValidationError(path, value, f"a selector of at most {MAX_SELECTOR_LENGTH} characters")
    if isinstance(value, str) and not allow_global and "global(" in value:
        raise ValidationError(path, value, selector.ALLOWED + " (without global())",
                              reason="global() can only be used in an EntityRule namespaceSelector")
    selector.validate(path, value, allow_global=allow_global)


def _qualified_name_ok(name: str) -> bool:
    prefix, _, rest = name.rpartition("/")
    if "/" in name and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(prefix)):
        return False
    return 0 < len(rest) <= 63 and bool(_QUALIFIED_NAME_RE.fullmatch(rest))


def check_labels(path: str, value: Any) -> None:
    """A Kubernetes label map: qualified-name keys, values of at most 63 characters."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValidationError(path, value, "a map of label names to string values")
    for key, item in value.items():
        if not isinstance(key, str) or not _qualified_name_ok(key):
            raise ValidationError(f"{path}.{key}", key, QUALIFIED_NAME_ALLOWED, reason="invalid label name")
        if not isinstance(item, str) or len(item) > 63 or not _LABEL_VALUE_RE.fullmatch(item):
            raise ValidationError(f"{path}.{key}", item, "a label value: empty, or at most 63 of letters, digits, "
                                                         "'-', '_' and '.', starting and ending alphanumeric")


def check_annotations(path: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValidationError(path, value, "a map of annotation names to string values")
    size = 0
    for key, item in value.items():
        if not isinstance(key, str) or not _qualified_name_ok(key.lower()):
            raise ValidationError(f"{path}.{key}", key, QUALIFIED_NAME_ALLOWED, reason="invalid annotation name")
        if not isinstance(item, str):
            raise ValidationError(f"{path}.{key}", item, "a string")
        size += len(key) + len(item)
    if size > 256 * 1024:
        raise ValidationError(path, f"{size} bytes", "at most 262144 bytes of annotations")


def check_cidr(path: str, value: Any, *, strict: bool, allow_ip: bool) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR; ``strict``: no host bits (Calico's ``net``); ``allow_ip``: a bare address is a /32 or /128."""
    text = value if isinstance(value, str) else ""
    try:
        if "/" not in text and not allow_ip:
            raise ValueError("no prefix length")
        return ipaddress.ip_network(text, strict=strict)
    except ValueError:
        allowed = "a CIDR such as 10.0.0.0/8" + (" or an IP address" if allow_ip else "")
        if strict:
            allowed += ", with no host bits set"
        raise ValidationError(path, value, allowed) from None


def check_ip(path: str, value: Any) -> None:
    try:
        ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        raise ValidationError(path, value, "an IPv4 or IPv6 address") from None


# ---- protocols and ports -----------------------------------------------------------------
def protocol_number(path: str, value: Any) -> int:
    """The IP protocol number of a Calico protocol (a name in Calico's spelling, or 1-255)."""
    if isinstance(value, str) and value in PROTOCOLS:
        return PROTOCOLS[value]
    if isinstance(value, str) and value.isdigit() and value.isascii():
        value = int(value)  # Calico reads "6" as the number 6
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
        raise ValidationError(path, value, PROTOCOL_ALLOWED)
    return value


def port_is_named(path: str, value: Any) -> bool:
    """Validate one entry of ports/notPorts; True for a named port."""
    if isinstance(value, bool):
        raise ValidationError(path, value, PORT_ALLOWED)
    if isinstance(value, int):
        check_port_number(path, value, value)
        return False
    if not isinstance(value, str):
        raise ValidationError(path, value, PORT_ALLOWED)
    if value.isdigit() and value.isascii():
        check_port_number(path, value, int(value))
        return False
    found = _RANGE_RE.fullmatch(value)
    if found:
        low, high = int(found.group(1)), int(found.group(2))
        check_port_number(path, value, low)
        check_port_number(path, value, high)
        if low > high:
            raise ValidationError(path, value, PORT_ALLOWED, reason="the range's minimum is above its maximum")
        return False
    if not _PORT_NAME_RE.fullmatch(value):
        raise ValidationError(path, value, PORT_ALLOWED)
    return True


def check_port_number(path: str, value: Any, number: int) -> None:
    if not 1 <= number <= 65535:
        raise ValidationError(path, value, PORT_ALLOWED, reason="port numbers run from 1 to 65535")


def check_endpoint_ports(path: str, value: Any, *, workload: bool) -> None:
    """HostEndpoint ``ports`` [{name, port, protocol}] (named host ports), or a
    WorkloadEndpoint's (which may add hostPort and hostIP, and may omit the name
    when it maps a hostPort)."""
    if value is None:
        return
    fields = ("name", "port", "protocol") + (("hostPort", "hostIP") if workload else ())
    for i, port in enumerate(check_list(path, value, "ports {" + ", ".join(fields) + "}")):
        where = f"{path}[{i}]"
        port = port if workload else check_fields(where, port, fields)
        if not isinstance(port, dict):
            raise ValidationError(where, port, "an object with fields " + ", ".join(fields))
        name = port.get("name")
        if name or not workload or not port.get("hostPort"):
            check_iana_port_name(f"{where}.name", name)
        check_int(f"{where}.port", port.get("port"), 1, 65535)
        protocol = port.get("protocol")
        if protocol is None or protocol_number(f"{where}.protocol", protocol) not in PORT_PROTOCOLS:
            raise ValidationError(f"{where}.protocol", protocol, "TCP, UDP or SCTP (a protocol with ports)")
        if workload and port.get("hostPort") is not None:
            check_int(f"{where}.hostPort", port["hostPort"], 0, 65535)
        if workload and port.get("hostIP"):
            check_ip(f"{where}.hostIP", port["hostIP"])


def check_iana_port_name(path: str, value: Any) -> None:
    """A Kubernetes port name: 1-15 of a-z, 0-9, '-', with a letter, no '--', no '-' at either end."""
    if (not isinstance(value, str) or not 1 <= len(value) <= 15 or not _IANA_PORT_NAME_RE.fullmatch(value)
            or "--" in value or not any(c.isalpha() for c in value)):
        raise ValidationError(path, value, "a port name of 1-15 lowercase letters, digits and '-', with at least "
                                           "one letter, no '--' and no '-' at either end")


# ---- rules -------------------------------------------------------------------------------
def check_rules(path: str, value: Any, *, direction: str, scope: str) -> None:
    """A list of rules under ``path`` (``spec.ingress``); ``direction`` ingress|egress,
    ``scope`` the kind that holds them (NetworkPolicy, GlobalNetworkPolicy, Profile)."""
    if value is None:
        return
    for i, rule in enumerate(check_list(path, value, "rules", max_items=MAX_RULES)):
        check_rule(f"{path}[{i}]", rule, direction=direction, scope=scope)


def check_rule(path: str, rule: Any, *, direction: str, scope: str) -> None:
    rule = check_fields(path, rule, RULE_FIELDS)
    if rule.get("action") is None:
        raise ValidationError(f"{path}.action", None, "|".join(ACTIONS), reason="a rule needs an action")
    if rule["action"] not in ACTIONS:
        raise ValidationError(f"{path}.action", rule["action"], "|".join(ACTIONS))
    ip_version = rule.get("ipVersion")
    if ip_version is not None and (isinstance(ip_version, bool) or ip_version not in (4, 6)):
        raise ValidationError(f"{path}.ipVersion", ip_version, "4 or 6")
    protocol = None if rule.get("protocol") is None else protocol_number(f"{path}.protocol", rule["protocol"])
    not_protocol = None if rule.get("notProtocol") is None else \
        protocol_number(f"{path}.notProtocol", rule["notProtocol"])
    for field in ("icmp", "notICMP"):
        if rule.get(field) is not None:
            _check_icmp(f"{path}.{field}", rule[field], protocol)
    for proto, field in ((protocol, "protocol"), (not_protocol, "notProtocol")):
        family = {1: 4, 58: 6}.get(proto or 0)
        if family and ip_version is not None and ip_version != family:
            raise ValidationError(f"{path}.ipVersion", ip_version,
                                  f"{family} (the rule's {field} is {rule[field]!r})",
                                  reason="ipVersion does not match the ICMP family")
    entities = {}
    for side in ("source", "destination"):
        if rule.get(side) is not None:
            entities[side] = _check_entity(f"{path}.{side}", rule[side], scope=scope)
    _check_rule_ports(path, rule, protocol, entities)
    _check_rule_nets(path, entities, ip_version)
    _check_rule_services(path, rule, entities, direction=direction, scope=scope)
    if rule.get("http") is not None:
        _check_http(path, rule, protocol, direction=direction, scope=scope)
    if rule.get("metadata") is not None:
        meta = check_fields(f"{path}.metadata", rule["metadata"], RULE_METADATA_FIELDS)
        check_annotations(f"{path}.metadata.annotations", meta.get("annotations"))


def _check_icmp(path: str, value: Any, protocol: int | None) -> None:
    icmp = check_fields(path, value, ICMP_FIELDS)
    if icmp.get("type") is not None:
        check_int(f"{path}.type", icmp["type"], 0, 254)
    if icmp.get("code") is not None:
        if icmp.get("type") is None:
            raise ValidationError(f"{path}.code", icmp["code"], "a code only together with an ICMP type",
                                  reason="ICMP code specified without an ICMP type")
        check_int(f"{path}.code", icmp["code"], 0, 255)
    if protocol not in (1, 58):
        raise ValidationError(path, value, "ICMP fields only on a rule with protocol ICMP or ICMPv6")


def _check_entity(path: str, value: Any, *, scope: str) -> dict[str, Any]:
    entity = check_fields(path, value, ENTITY_FIELDS)
    for field in ("nets", "notNets"):
        for i, net in enumerate(check_list(f"{path}.{field}", entity.get(field) or [], "CIDRs", max_items=256)):
            check_cidr(f"{path}.{field}[{i}]", net, strict=True, allow_ip=False)
    for field in ("selector", "notSelector"):
        check_selector(f"{path}.{field}", entity.get(field))
    ns_selector = entity.get("namespaceSelector")
    if isinstance(ns_selector, str) and "global(" in ns_selector and not selector.is_only_global(ns_selector):
        raise ValidationError(f"{path}.namespaceSelector", ns_selector, "global() alone, or a selector without it",
                              reason="global() cannot be combined with other selectors")
    check_selector(f"{path}.namespaceSelector", ns_selector, allow_global=True)
    for field in ("ports", "notPorts"):
        for i, port in enumerate(check_list(f"{path}.{field}", entity.get(field) or [], "ports", max_items=50)):
            port_is_named(f"{path}.{field}[{i}]", port)
    if entity.get("serviceAccounts") is not None:
        accounts = check_fields(f"{path}.serviceAccounts", entity["serviceAccounts"], SERVICE_ACCOUNT_FIELDS)
        for i, name in enumerate(check_list(f"{path}.serviceAccounts.names", accounts.get("names") or [],
                                            "service account names")):
            if not isinstance(name, str) or not name:
                raise ValidationError(f"{path}.serviceAccounts.names[{i}]", name, "a service account name")
        check_selector(f"{path}.serviceAccounts.selector", accounts.get("selector"))
    if entity.get("services") is not None:
        _check_services(f"{path}.services", entity)
    return entity


def _check_services(path: str, entity: dict[str, Any]) -> None:
    """Accepted as Calico does; in etcd mode Felix has no Service data, so it matches nothing."""
    services = check_fields(path, entity["services"], SERVICE_FIELDS)
    if not services.get("name"):
        raise ValidationError(f"{path}.name", services.get("name"), "the name of a Kubernetes Service",
                              reason="services must name a service")
    check_name(f"{path}.name", services["name"])
    if services.get("namespace"):
        check_name(f"{path}.namespace", services["namespace"])
    for others in (("namespaceSelector",), ("selector", "notSelector"), ("serviceAccounts",), ("nets", "notNets")):
        for other in others:
            if entity.get(other):
                raise ValidationError(path, services, f"services without {' or '.join(others)} in the same entity",
                                      reason=f"cannot specify {other} and services on the same rule")


def _check_rule_ports(path: str, rule: dict[str, Any], protocol: int | None, entities: dict[str, Any]) -> None:
    for side, entity in entities.items():
        for field in ("ports", "notPorts"):
            for i, port in enumerate(entity.get(field) or []):
                where = f"{path}.{side}.{field}[{i}]"
                if protocol is None and not port_is_named(where, port):
                    raise ValidationError(where, port, "a named port, or set the rule's protocol to TCP, UDP or SCTP",
                                          reason="numeric ports and port ranges need protocol TCP, UDP or SCTP")
                if protocol is not None and protocol not in PORT_PROTOCOLS:
                    raise ValidationError(where, port, "ports only with protocol TCP, UDP or SCTP",
                                          reason=f"protocol {rule['protocol']!r} has no ports")


def _check_rule_nets(path: str, entities: dict[str, Any], ip_version: int | None) -> None:
    seen: set[int] = set()
    for side, entity in entities.items():
        for field in ("nets", "notNets"):
            for i, net in enumerate(entity.get(field) or []):
                where = f"{path}.{side}.{field}[{i}]"
                network = ipaddress.ip_network(net)
                if field == "notNets" and network.prefixlen == 0:
                    raise ValidationError(where, net, "a CIDR narrower than /0",
                                          reason="a catch-all CIDR in notNets matches no traffic")
                if ip_version is not None and network.version != ip_version:
                    raise ValidationError(where, net, f"an IPv{ip_version} CIDR (the rule's ipVersion)",
                                          reason="the CIDR's IP version does not match the rule's ipVersion")
                if seen and network.version not in seen:
                    raise ValidationError(where, net, f"an IPv{min(seen)} CIDR like the rule's others",
                                          reason="a rule cannot mix IPv4 and IPv6 CIDRs")
                seen.add(network.version)


def _check_rule_services(path: str, rule: dict[str, Any], entities: dict[str, Any], *, direction: str,
                         scope: str) -> None:
    destination = entities.get("destination") or {}
    if destination.get("services") is not None:
        for field in ("ports", "notPorts"):
            if destination.get(field):
                raise ValidationError(f"{path}.destination.{field}", destination[field],
                                      "no ports with destination services (the service's ports apply)")
    if scope == "Profile":
        return
    wrong_side = "source" if direction == "egress" else "destination"
    services = (entities.get(wrong_side) or {}).get("services")
    if services is not None:
        raise ValidationError(f"{path}.{wrong_side}.services", services,
                              f"services only in the {'destination' if direction == 'egress' else 'source'} "
                              f"of an {direction} rule")
    right_side = "destination" if direction == "egress" else "source"
    services = (entities.get(right_side) or {}).get("services")
    if scope == "GlobalNetworkPolicy" and services is not None and not services.get("namespace"):
        raise ValidationError(f"{path}.{right_side}.services.namespace", services.get("namespace"),
                              "the Service's namespace (a GlobalNetworkPolicy has none of its own)")


def _check_http(path: str, rule: dict[str, Any], protocol: int | None, *, direction: str, scope: str) -> None:
    """Accepted (validated) as Calico does; the iptables dataplane ignores HTTP matches."""
    http = check_fields(f"{path}.http", rule["http"], HTTP_FIELDS)
    methods = check_list(f"{path}.http.methods", http.get("methods") or [], "HTTP methods", max_items=20)
    for i, method in enumerate(methods):
        if not isinstance(method, str) or not method:
            raise ValidationError(f"{path}.http.methods[{i}]", method, "an HTTP method such as GET")
        if method in methods[:i]:
            raise ValidationError(f"{path}.http.methods[{i}]", method, "each method once")
    for i, item in enumerate(check_list(f"{path}.http.paths", http.get("paths") or [], "paths", max_items=20)):
        where = f"{path}.http.paths[{i}]"
        match = check_fields(where, item, HTTP_PATH_FIELDS)
        given = [field for field in HTTP_PATH_FIELDS if match.get(field)]
        if len(given) != 1:
            raise ValidationError(where, item, "exactly one of exact or prefix")
        text = match[given[0]]
        if not isinstance(text, str) or not text.startswith("/") or any(c in text for c in "? #"):
            raise ValidationError(f"{where}.{given[0]}", text, "a path starting with '/' without '?', ' ' or '#'")
    if rule["action"] != "Allow":
        raise ValidationError(f"{path}.http", rule["http"], "http matches only on Allow rules")
    if protocol not in (None, 6):
        raise ValidationError(f"{path}.protocol", rule["protocol"], "TCP (or no protocol) on a rule with http")
    if direction == "egress" and scope != "Profile":
        raise ValidationError(f"{path}.http", rule["http"], "http matches only in ingress rules")
