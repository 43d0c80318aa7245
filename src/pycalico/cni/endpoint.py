"""The WorkloadEndpoint of one attachment: built, written, rolled back, and the host veth
names it claims (an existing veth is replaced only when it is this attachment's own)."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pycalico.cni import names
from pycalico.cni.netconf import NetConf
from pycalico.cni.runtime import Context
from pycalico.errors import PycalicoError, ResourceExists
from pycalico.model import WorkloadEndpoint, wep_name

if TYPE_CHECKING:
    from pycalico.cni.k8s import PodInfo

log = logging.getLogger("pycalico.cni")

NETWORK_ANNOTATION = "pycalico.io/network"


def pod_addresses(assigned: Sequence[Any]) -> list[ipaddress.IPv4Interface]:
    """IPAM's block-masked IPv4 addresses as the pod's /32s."""
    return [ipaddress.IPv4Interface(f"{a.ip}/32") for a in assigned if a.version == 4]


def ipam_attrs(node: str, w: names.Workload) -> dict[str, str]:
    attrs = {"node": node, "timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")}
    if w.is_k8s:
        attrs["pod"] = w.workload
        attrs["namespace"] = w.namespace
    return attrs


def build(conf: NetConf, node: str, w: names.Workload, host_if: str, mac: str,
          addrs: Sequence[ipaddress.IPv4Interface], pod: PodInfo | None = None) -> WorkloadEndpoint:
    """Calico's endpoint for the attachment; ``pod`` (Kubernetes mode) adds the pod's labels,
    Calico's implicit ones, the kns./ksa. profiles, the service account and named ports."""
    spec: dict[str, Any] = {
        "orchestrator": w.orchestrator,
        "node": node,
        "containerID": w.container_id,
        "endpoint": w.ifname,
        "ipNetworks": [f"{a.ip}/32" for a in addrs],
        "profiles": [conf.name],
        "interfaceName": host_if,
        "mac": mac,
    }
    if w.is_k8s:
        spec["pod"] = w.workload
        spec["workload"] = ""
    else:
        spec["workload"] = w.workload
    metadata: dict[str, Any] = {"annotations": {NETWORK_ANNOTATION: conf.name}}
    if pod is not None:
        spec["profiles"] = list(pod.profiles)
        spec["serviceAccountName"] = pod.service_account
        if pod.ports:
            spec["ports"] = list(pod.ports)
        metadata["labels"] = dict(pod.labels)
    return WorkloadEndpoint(wep_name(node, w.orchestrator, w.workload, w.ifname), spec, namespace=w.namespace,
                            metadata=metadata)


def write(ctx: Context, wep: WorkloadEndpoint) -> None:
    try:
        ctx.store.create(wep)
    except ResourceExists:
        # A stale endpoint of an earlier attempt (its interface is gone, or the veth step
        # would have failed): this attachment replaces it.
        ctx.store.apply(wep)


def undo(ctx: Context, name: str, namespace: str, container_id: str) -> None:
    """Delete the endpoint an ADD wrote, unless another sandbox has taken it over since."""
    try:
        current = ctx.store.get(WorkloadEndpoint, name, namespace)
        if current is not None and current.container_id == container_id:
            ctx.store.delete(WorkloadEndpoint, name, namespace, resource_version=current.resource_version)
    except PycalicoError:
        log.exception("rolling back endpoint %s failed", name)


def stale_host_veth(ctx: Context, node: str, host_if: str, name: str, namespace: str) -> bool:
    """Whether an existing host veth named ``host_if`` may be deleted for this attachment:
    only when endpoints claim it and every one is this attachment's own endpoint (an earlier
    sandbox of the same pod interface, which this ADD replaces, as Calico does). A veth no
    endpoint claims may be another attachment's ADD in flight: never deleted."""
    owners = [wep for wep in ctx.store.list(WorkloadEndpoint)
              if wep.node == node and wep.interface_name == host_if]
    return bool(owners) and all((wep.name, wep.namespace) == (name, namespace) for wep in owners)


def claimed_by_another(ctx: Context, node: str, host_if: str, name: str) -> bool:
    return any(wep.node == node and wep.interface_name == host_if and wep.name != name
               for wep in ctx.store.list(WorkloadEndpoint))
