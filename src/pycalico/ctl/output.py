"""``get`` output as calicoctl prints it: ``ps`` and ``wide`` tables with each kind's
columns, YAML and JSON (one resource by name; a ``<Kind>List`` otherwise, which
``apply -f`` reads back)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

from pycalico.model import Resource
from pycalico.model.resources import API_VERSION


def _join(values: Any, limit: int = 0) -> str:
    text = ",".join(str(v) for v in values or [])
    return text[: limit - 3] + "..." if limit and len(text) > limit else text


def _spec(field: str) -> Callable[[Resource], str]:
    def get(res: Resource) -> str:
        value = res.spec.get(field)
        if value is None:
            return ""
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)
    return get


def _peer_node(res: Resource) -> str:
    return str(res.spec.get("node") or res.spec.get("nodeSelector") or "(global)")


def _bgp(field: str) -> Callable[[Resource], str]:
    return lambda res: str((res.spec.get("bgp") or {}).get(field) or "")


_COLUMNS: dict[str, Callable[[Resource], str]] = {
    "NAME": lambda r: r.name,
    "NAMESPACE": lambda r: r.namespace or "",
    "TIER": lambda r: str(r.spec.get("tier") or "default"),
    "ORDER": _spec("order"),
    "SELECTOR": _spec("selector"),
    "NETS": lambda r: _join(r.spec.get("nets"), 80),
    "NODE": _spec("node"),
    "INTERFACE": _spec("interfaceName"),
    "IPS": lambda r: _join(r.spec.get("expectedIPs")),
    "PROFILES": lambda r: _join(r.spec.get("profiles")),
    "LABELS": lambda r: _join(r.spec.get("labelsToApply") or {}),
    "CIDR": _spec("cidr"),
    "NAT": lambda r: str(bool(r.spec.get("natOutgoing"))).lower(),
    "IPIPMODE": lambda r: str(r.spec.get("ipipMode") or "Never"),
    "VXLANMODE": lambda r: str(r.spec.get("vxlanMode") or "Never"),
    "DISABLED": lambda r: str(bool(r.spec.get("disabled"))).lower(),
    "DISABLEBGPEXPORT": lambda r: str(bool(r.spec.get("disableBGPExport"))).lower(),
    "ASSIGNMENTMODE": _spec("assignmentMode"),
    "ASN": lambda r: _bgp("asNumber")(r) if r.KIND == "Node" else _spec("asNumber")(r),
    "IPV4": _bgp("ipv4Address"),
    "IPV6": _bgp("ipv6Address"),
    "PEERIP": _spec("peerIP"),
    "PEERNODE": _peer_node,
    "LOGSEVERITY": _spec("logSeverityScreen"),
    "MESHENABLED": lambda r: _spec("nodeToNodeMeshEnabled")(r) or "-",
    "ASNUMBER": lambda r: _spec("asNumber")(r) or "-",
    "CLUSTERGUID": _spec("clusterGUID"),
    "CLUSTERTYPE": _spec("clusterType"),
    "CALICOVERSION": _spec("calicoVersion"),
    "DATASTOREREADY": _spec("datastoreReady"),
    "WORKLOAD": lambda r: str(r.spec.get("workload") or r.spec.get("pod") or ""),
    "NETWORKS": lambda r: _join(r.spec.get("ipNetworks")),
    "NATS": lambda r: _join(r.spec.get("ipNATs")),
}

# (ps, wide) columns per kind, calicoctl's (calicoctl/resourcemgr/*.go).
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "NetworkPolicy": (("NAME", "TIER"), ("NAME", "TIER", "ORDER", "SELECTOR")),
    "GlobalNetworkPolicy": (("NAME", "TIER"), ("NAME", "TIER", "ORDER", "SELECTOR")),
    "NetworkSet": (("NAME",), ("NAME", "NETS")),
    "GlobalNetworkSet": (("NAME",), ("NAME", "NETS")),
    "HostEndpoint": (("NAME", "NODE"), ("NAME", "NODE", "INTERFACE", "IPS", "PROFILES")),
    "Profile": (("NAME",), ("NAME", "LABELS")),
    "Tier": (("NAME", "ORDER"), ("NAME", "ORDER")),
    "IPPool": (("NAME", "CIDR", "SELECTOR"), ("NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED",
                                              "DISABLEBGPEXPORT", "SELECTOR", "ASSIGNMENTMODE")),
    "Node": (("NAME",), ("NAME", "ASN", "IPV4", "IPV6")),
    "BGPPeer": (("NAME", "PEERIP", "PEERNODE", "ASN"), ("NAME", "PEERIP", "PEERNODE", "ASN")),
    "BGPConfiguration": (("NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"),
                         ("NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER")),
    "FelixConfiguration": (("NAME",), ("NAME",)),
    "ClusterInformation": (("NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"),) * 2,
    "WorkloadEndpoint": (("WORKLOAD", "NODE", "NETWORKS", "INTERFACE"),
                         ("NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS")),
}
_HEADINGS = {"PEERNODE": "NODE"}


def table(kind: str, resources: list[Resource], *, wide: bool = False, namespace_column: bool = False) -> str:
    """Columns padded with spaces, headings in capitals, no borders (calicoctl's tabwriter)."""
    ps, wide_columns = TABLES.get(kind, (("NAME",), ("NAME",)))
    columns = list(wide_columns if wide else ps)
    if namespace_column and resources and resources[0].NAMESPACED:
        columns.insert(0, "NAMESPACE")
    rows = [[_HEADINGS.get(c, c) for c in columns]]
    rows += [[_COLUMNS[c](r) for c in columns] for r in resources]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def document(kind: str, resources: list[Resource], *, single: bool) -> dict[str, Any]:
    """One resource got by name as itself; anything else as a ``<Kind>List``."""
    if single and len(resources) == 1:
        return resources[0].to_json()
    return {"apiVersion": API_VERSION, "kind": f"{kind}List", "metadata": {},
            "items": [r.to_json() for r in resources]}


def render(kind: str, resources: list[Resource], output: str, *, single: bool, namespace_column: bool = False) -> str:
    if output == "json":
        return json.dumps(document(kind, resources, single=single), indent=2)
    if output == "yaml":
        return yaml.safe_dump(document(kind, resources, single=single), sort_keys=False).rstrip()
    return table(kind, resources, wide=output == "wide", namespace_column=namespace_column)
