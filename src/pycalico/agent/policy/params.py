"""The policy-related FelixConfiguration fields the agent honours (calico-policy.md §7)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Felix's defaults (felix/config/config_params.go)
FAILSAFE_IN = (("tcp", 22), ("udp", 68), ("tcp", 179), ("tcp", 2379), ("tcp", 2380), ("tcp", 5473),
               ("tcp", 6443), ("tcp", 6666), ("tcp", 6667))
FAILSAFE_OUT = (("udp", 53), ("udp", 67), ("tcp", 179), ("tcp", 2379), ("tcp", 2380), ("tcp", 5473),
                ("tcp", 6443), ("tcp", 6666), ("tcp", 6667))


@dataclass(frozen=True)
class PolicyParams:
    # Felix defaults to Drop; kubeasz (and Calico's etcd manifest) run Felix with ACCEPT,
    # which is what the users of this collection expect: pods may reach their own node.
    endpoint_to_host_action: str = "ACCEPT"
    filter_deny_action: str = "DROP"
    mangle_allow_action: str = "ACCEPT"  # RETURN: later mangle PREROUTING rules still see allowed packets
    chain_insert_mode: str = "insert"
    interface_prefixes: tuple[str, ...] = ("cali",)
    log_prefix: str = "calico-packet"
    disable_conntrack_invalid_check: bool = False
    allow_vxlan_from_workloads: bool = False
    allow_ipip_from_workloads: bool = False
    vxlan_port: int = 4789
    failsafe_in: tuple[tuple[str, int], ...] = FAILSAFE_IN
    failsafe_out: tuple[tuple[str, int], ...] = FAILSAFE_OUT
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def merge(cls, env: Mapping[str, str], *specs: Mapping[str, Any]) -> PolicyParams:
        """``FELIX_<NAME>`` env > node.<name> > default, as Felix reads them (specs highest first)."""

        def raw(json_name: str) -> Any:
            value: Any = env.get("FELIX_" + json_name.upper())
            if value in (None, ""):
                value = next((s[json_name] for s in specs if s.get(json_name) not in (None, "")), None)
            return value

        values: dict[str, Any] = {}
        action = raw("defaultEndpointToHostAction")
        if isinstance(action, str) and action.upper() in ("DROP", "ACCEPT", "RETURN"):
            values["endpoint_to_host_action"] = action.upper()
        deny = raw("iptablesFilterDenyAction")
        if isinstance(deny, str) and deny.upper() in ("DROP", "REJECT"):
            values["filter_deny_action"] = deny.upper()
        mangle = raw("iptablesMangleAllowAction")
        if isinstance(mangle, str) and mangle.upper() in ("ACCEPT", "RETURN"):
            values["mangle_allow_action"] = mangle.upper()
        mode = raw("chainInsertMode")
        if isinstance(mode, str) and mode.lower() in ("insert", "append"):
            values["chain_insert_mode"] = mode.lower()
        prefix = raw("interfacePrefix")
        if isinstance(prefix, str) and prefix.strip():
            values["interface_prefixes"] = tuple(p.strip() for p in prefix.split(",") if p.strip())
        log_prefix = raw("logPrefix")
        if isinstance(log_prefix, str) and log_prefix:
            values["log_prefix"] = log_prefix[:27]
        for json_name, attr in (("disableConntrackInvalidCheck", "disable_conntrack_invalid_check"),
                                ("allowVXLANPacketsFromWorkloads", "allow_vxlan_from_workloads"),
                                ("allowIPIPPacketsFromWorkloads", "allow_ipip_from_workloads")):
            flag = _bool(raw(json_name))
            if flag is not None:
                values[attr] = flag
        port = raw("vxlanPort")
        if port is not None:
            try:
                values["vxlan_port"] = int(port)
            except (TypeError, ValueError):
                pass
        for json_name, attr in (("failsafeInboundHostPorts", "failsafe_in"),
                                ("failsafeOutboundHostPorts", "failsafe_out")):
            ports = _failsafe(raw(json_name))
            if ports is not None:
                values[attr] = ports
        return cls(**values)


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _failsafe(value: Any) -> tuple[tuple[str, int], ...] | None:
    """FelixConfiguration's ``[{protocol, port}]`` or the env form ``tcp:22,udp:68`` / ``none``."""
    if value is None:
        return None
    out: list[tuple[str, int]] = []
    if isinstance(value, str):
        if value.strip().lower() == "none":
            return ()
        for item in value.split(","):
            proto, _, port = item.strip().rpartition(":")
            try:
                out.append(((proto or "tcp").lower(), int(port)))
            except ValueError:
                return None  # Felix ignores a bad value and keeps the default
        return tuple(out)
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, dict):
                return None
            try:
                out.append((str(item.get("protocol") or "tcp").lower(), int(item["port"])))
            except (KeyError, TypeError, ValueError):
                return None
        return tuple(out)
    return None
