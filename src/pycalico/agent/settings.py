"""Agent settings from the environment (docs/interfaces.md), built once at the edge."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pycalico.errors import ValidationError


def _int(values: Mapping[str, str], name: str, default: int) -> int:
    raw = values.get(name, "")
    if raw in ("", None):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(name, raw, "an integer") from None


def _float(values: Mapping[str, str], name: str, default: float) -> float:
    raw = values.get(name, "")
    if raw in ("", None):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValidationError(name, raw, "a number of seconds") from None


def _labels(raw: str) -> dict[str, str]:
    out = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError("PYCALICO_NODE_LABELS", raw, "k=v,k2=v2")
        out[key.strip()] = value.strip()
    return out


@dataclass
class AgentSettings:
    nodename: str
    state_dir: Path = Path("/var/lib/pycalico")
    run_dir: Path = Path("/var/run/pycalico")
    bird_dir: Path = Path("/etc/pycalico/bird")
    ip: str = ""  # "", "autodetect", "none", or an address
    autodetection_method: str = "first-found"
    as_number: int | None = None
    pool_cidr: str = ""
    pool_ipip: str = ""
    pool_vxlan: str = ""
    pool_block_size: int = 26
    pool_nat_outgoing: bool = True
    backend: str = "bird"
    mtu: int = 0
    rr_cluster_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    cluster_name: str = ""
    health_host: str = "127.0.0.1"
    health_port: int = 9099
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9091
    route_protocol: int = 80
    resync_interval: float = 30.0
    handover_timeout: float = 60.0  # at most this long an agent route waits for BIRD's (dataplane.py)
    status_interval: float = 30.0
    status_ttl: int = 90
    iptables_backend: str = "auto"
    cni_server: bool = True

    @property
    def nodename_file(self) -> Path:
        return self.state_dir / "nodename"

    @property
    def mtu_file(self) -> Path:
        return self.state_dir / "mtu"

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> AgentSettings:
        state_dir = Path(env.get("PYCALICO_STATE_DIR") or "/var/lib/pycalico")
        nodename = (env.get("NODENAME") or "").strip()
        if not nodename:
            path = state_dir / "nodename"
            if path.exists():
                nodename = path.read_text().strip()
        if not nodename:
            nodename = (env.get("HOSTNAME") or socket.gethostname()).strip().lower()
        backend = (env.get("CALICO_NETWORKING_BACKEND") or "bird").strip().lower()
        if backend not in ("bird", "vxlan", "none"):
            raise ValidationError("CALICO_NETWORKING_BACKEND", backend, "bird, vxlan or none")
        ipip = env.get("CALICO_IPV4POOL_IPIP") or ""
        vxlan = env.get("CALICO_IPV4POOL_VXLAN") or ""
        overlay = (env.get("CALICO_ENABLE_OVERLAY") or "").strip()
        if overlay and not ipip and not vxlan:
            # kubeasz >= 3.7's single knob: IPIP under BIRD, VXLAN otherwise (docs/collection.md)
            if backend == "bird":
                ipip = overlay
            else:
                vxlan = overlay
        nat = (env.get("CALICO_IPV4POOL_NAT_OUTGOING") or "true").strip().lower()
        as_raw = (env.get("AS") or "").strip()
        return cls(
            nodename=nodename,
            state_dir=state_dir,
            run_dir=Path(env.get("PYCALICO_RUN_DIR") or "/var/run/pycalico"),
            bird_dir=Path(env.get("PYCALICO_BIRD_DIR") or "/etc/pycalico/bird"),
            ip=(env.get("IP") or "").strip(),
            autodetection_method=(env.get("IP_AUTODETECTION_METHOD") or "first-found").strip(),
            as_number=_int(env, "AS", 0) or None if as_raw else None,
            pool_cidr=(env.get("CALICO_IPV4POOL_CIDR") or env.get("CLUSTER_CIDR") or "").strip(),
            pool_ipip=ipip.strip(),
            pool_vxlan=vxlan.strip(),
            pool_block_size=_int(env, "CALICO_IPV4POOL_BLOCK_SIZE", 26),
            pool_nat_outgoing=nat in ("true", "1", "yes"),
            backend=backend,
            mtu=_int(env, "PYCALICO_MTU", 0),
            rr_cluster_id=(env.get("PYCALICO_RR_CLUSTER_ID") or "").strip(),
            labels=_labels(env.get("PYCALICO_NODE_LABELS") or ""),
            cluster_name=(env.get("CLUSTER_NAME") or "").strip(),
            health_host=env.get("PYCALICO_HEALTH_HOST") or "127.0.0.1",
            health_port=_int(env, "PYCALICO_HEALTH_PORT", 9099),
            metrics_host=env.get("PYCALICO_METRICS_HOST") or "0.0.0.0",
            metrics_port=_int(env, "PYCALICO_METRICS_PORT", 9091),
            route_protocol=_int(env, "PYCALICO_ROUTE_PROTOCOL", 80),
            resync_interval=_float(env, "PYCALICO_RESYNC_INTERVAL", 30.0),
            handover_timeout=_float(env, "PYCALICO_HANDOVER_TIMEOUT", 60.0),
            status_interval=_float(env, "PYCALICO_STATUS_INTERVAL", 30.0),
            iptables_backend=(env.get("PYCALICO_IPTABLES_BACKEND") or "auto").strip(),
            cni_server=(env.get("PYCALICO_CNI_SERVER") or "true").strip().lower() not in ("0", "false", "no"),
        )

    @classmethod
    def from_env(cls) -> AgentSettings:
        return cls.from_mapping(os.environ)


def mode(value: str) -> str:
    """kubeasz/calico-node spellings (always, crosssubnet, cross-subnet, never, true, false) → Calico's."""
    v = value.strip().lower().replace("-", "").replace("_", "")
    if v in ("always", "true", "yes", "on", "1"):
        return "Always"
    if v in ("crosssubnet",):
        return "CrossSubnet"
    if v in ("", "never", "false", "no", "off", "0"):
        return "Never"
    raise ValidationError("CALICO_IPV4POOL_IPIP/VXLAN", value, "Always, CrossSubnet or Never")
