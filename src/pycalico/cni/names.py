"""Identifiers exactly as Calico derives them (calico-internals §3.2)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

VETH_PREFIX = "cali"
PRIMARY_IFNAME = "eth0"  # the attachment whose names are Calico's, unchanged


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
    """``cali`` + 11 chars: sha1("<ns>.<pod>") for pods, else the container id.

    Attachments are keyed by (container, ifname): an interface other than ``eth0``
    (a second ifname, a second network as Multus adds it) gets sha1 of
    "<ns>.<pod>.<ifname>" / "<containerID>.<ifname>" so it never meets the first's."""
    if w.ifname and w.ifname != PRIMARY_IFNAME:
        owner = f"{w.namespace}.{w.workload}" if w.is_k8s else w.container_id
        return (prefix + hashlib.sha1(f"{owner}.{w.ifname}".encode()).hexdigest())[:15]
    if w.is_k8s:
        digest = hashlib.sha1(f"{w.namespace}.{w.workload}".encode()).hexdigest()
        return (prefix + digest)[:15]
    return (prefix + w.container_id)[:15]


def handle_id(network: str, container_id: str, ifname: str = PRIMARY_IFNAME) -> str:
    """Calico's ``<network>.<containerID>`` for ``eth0``; ``<network>.<containerID>.<ifname>``
    for any other interface, so each attachment releases only its own addresses."""
    if ifname and ifname != PRIMARY_IFNAME:
        return f"{network}.{container_id}.{ifname}"
    return f"{network}.{container_id}"


def legacy_handle_id(w: Workload) -> str:
    """The handle of Calico's old releases (only ever for the first interface)."""
    return f"{w.namespace}.{w.workload}" if w.is_k8s else w.container_id


def random_mac() -> str:
    """The container side's MAC: random, unicast, locally administered."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)
