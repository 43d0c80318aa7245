"""pycalico-kube-controllers settings from the environment, with Calico's names
(calico-kubernetes.md §3.1): ENABLED_CONTROLLERS, KUBECONFIG, ETCD_* (or CALICO_ETCD_*),
RECONCILER_PERIOD, plus LEAK_GRACE_PERIOD, METRICS_HOST/METRICS_PORT and LEADER_ELECTION_TTL."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from pycalico.config import DatastoreSettings
from pycalico.errors import ValidationError

CONTROLLERS = ("node", "policy", "workloadendpoint", "serviceaccount", "namespace")
ALIASES = {"profile": "namespace"}
IGNORED = ("loadbalancer",)  # Calico's; no LoadBalancer pools here
_DURATION_RE = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(field: str, text: str) -> float:
    """Go-style durations as Calico reads them: ``5m``, ``90s``, ``1h30m``, ``0``; seconds."""
    text = text.strip()
    if text == "0":
        return 0.0
    match = _DURATION_RE.fullmatch(text)
    if not text or not match or not any(match.groups()):
        raise ValidationError(field, text, "a duration such as 5m, 90s, 1h30m or 0")
    hours, minutes, seconds = (float(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _int(values: Mapping[str, str], field: str, default: int, low: int, high: int) -> int:
    raw = values.get(field, "") or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(field, raw, f"a whole number from {low} to {high}") from None
    if not low <= value <= high:
        raise ValidationError(field, raw, f"a whole number from {low} to {high}")
    return value


@dataclass(frozen=True)
class Settings:
    controllers: tuple[str, ...]
    kubeconfig: str
    datastore: DatastoreSettings
    reconciler_period: float = 300.0
    leak_grace_period: float = 900.0
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9094
    leader_ttl: int = 5
    identity: str = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> Settings:
        raw = values.get("ENABLED_CONTROLLERS", "") or ",".join(CONTROLLERS)
        chosen: list[str] = []
        for item in (c.strip() for c in raw.split(",") if c.strip()):
            name = ALIASES.get(item, item)
            if name in IGNORED:
                continue
            if name not in CONTROLLERS:
                raise ValidationError("ENABLED_CONTROLLERS", item,
                                      ", ".join(CONTROLLERS + tuple(ALIASES) + IGNORED))
            if name not in chosen:
                chosen.append(name)
        prefix = "CALICO_ETCD_" if values.get("CALICO_ETCD_ENDPOINTS") and not values.get("ETCD_ENDPOINTS") else "ETCD_"
        return cls(
            controllers=tuple(chosen),
            kubeconfig=values.get("KUBECONFIG", "") or "",
            datastore=DatastoreSettings.from_mapping(values, prefix=prefix),
            reconciler_period=parse_duration("RECONCILER_PERIOD", values.get("RECONCILER_PERIOD", "") or "5m"),
            leak_grace_period=parse_duration("LEAK_GRACE_PERIOD", values.get("LEAK_GRACE_PERIOD", "") or "15m"),
            metrics_host=values.get("METRICS_HOST", "") or "0.0.0.0",
            metrics_port=_int(values, "METRICS_PORT", 9094, 0, 65535),
            leader_ttl=_int(values, "LEADER_ELECTION_TTL", 5, 2, 60),
            identity=values.get("LEADER_ELECTION_ID", "") or f"{socket.gethostname()}-{os.getpid()}",
        )

    @classmethod
    def from_env(cls) -> Settings:
        return cls.from_mapping(os.environ)
