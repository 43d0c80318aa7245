"""Identifiers exactly as Calico derives them (calico-internals §3.2)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

VETH_PREFIX = "cali"


@dataclass(frozen=True)
class Workload:
    """Who the attachment belongs to: a Kubernetes pod or a plain CNI container."""

    orchestrator: str  # "k8s" | "cni"
    namespace: str
    workload: str  # pod name, or the container id
    container_id: str
    ifname: str

    @property
    def is_k8s(self) -> bool:
        return self.orchestrator == "k8s"


def workload_from(args: dict[str, str], container_id: str, ifname: str) -> Workload:
    ns = args.get("K8S_POD_NAMESPACE", "")
    pod = args.get("K8S_POD_NAME", "")
    if ns and pod:
        return Workload("k8s", ns, pod, container_id, ifname)
    return Workload("cni", "default", container_id, container_id, ifname)


def host_veth_name(w: Workload, prefix: str = VETH_PREFIX) -> str:
    """``cali`` + 11 chars: sha1("<ns>.<pod>") for pods, else the container id."""
    if w.is_k8s:
        digest = hashlib.sha1(f"{w.namespace}.{w.workload}".encode()).hexdigest()
        return (prefix + digest)[:15]
    return (prefix + w.container_id)[:15]


def _segment(text: str) -> str:
    return text.replace("-", "--")


def wep_name(node: str, w: Workload) -> str:
    """``<node>-k8s-<pod>-<ifname>`` / ``<node>-cni-<containerID>-<ifname>``, '-' doubled inside segments."""
    return "-".join(_segment(s) for s in (node, w.orchestrator, w.workload, w.ifname))


def wep_name_prefix(node: str, w: Workload) -> str:
    return "-".join(_segment(s) for s in (node, w.orchestrator, w.workload)) + "-"


def handle_id(network: str, container_id: str) -> str:
    return f"{network}.{container_id}"


def legacy_handle_id(w: Workload) -> str:
    return f"{w.namespace}.{w.workload}" if w.is_k8s else w.container_id


def random_mac() -> str:
    """The container side's MAC: random, unicast, locally administered."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)
