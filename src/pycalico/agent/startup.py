"""calico-node's startup, in order (calico-internals §6): node name, address, Node
record, default pool, ClusterInformation, tunnel addresses, MTU file."""

from __future__ import annotations

import ipaddress
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pycalico.agent import autodetect
from pycalico.agent.calc import node_vtep_mac, pod_mtu
from pycalico.agent.settings import AgentSettings, mode
from pycalico.cluster import ClusterMismatch, claim_cluster
from pycalico.datastore.settle import read_to_settle
from pycalico.errors import (
    OutcomeUnknown,
    ResourceExists,
    ResourceNotFound,
    RevisionConflict,
    StartupError,
    ValidationError,
)
from pycalico.ipam import tunnel_attrs, tunnel_handle
from pycalico.model import ClusterInformation, IPPool, Node, ResourceStore

log = logging.getLogger(__name__)

DEFAULT_POOL_NAME = "default-ipv4-ippool"


def write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def determine_address(settings: AgentSettings, existing: Node | None,
                      ifaces: list[autodetect.Interface] | None = None) -> ipaddress.IPv4Interface | None:
    ip = settings.ip
    if ip.lower() == "none":
        return existing.ipv4_interface if existing is not None else None
    if ip and ip.lower() != "autodetect":
        if "/" in ip:
            try:
                return ipaddress.IPv4Interface(ip)
            except ValueError:
                raise ValidationError("IP", ip, "an IPv4 address, optionally with /prefix") from None
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            raise ValidationError("IP", ip, "an IPv4 address, autodetect or none") from None
        found = autodetect.find_interface(ifaces if ifaces is not None else autodetect.interfaces(), addr)
        return found[1] if found else ipaddress.IPv4Interface(f"{addr}/32")
    if not ip and existing is not None and existing.ipv4_interface is not None:
        # calico-node keeps a configured address unless asked to autodetect
        current = existing.ipv4_interface
        found = autodetect.find_interface(ifaces if ifaces is not None else autodetect.interfaces(), current.ip)
        if found:
            return current
    return autodetect.autodetect(settings.autodetection_method, ifaces)


def register_node(store: ResourceStore, settings: AgentSettings, address: ipaddress.IPv4Interface | None) -> Node:
    """Create or update this node's Node. A write whose reply was lost is settled by
    reading the Node back: a create carries a uid chosen here (ours there → created;
    absent → create again, exclusive with the first), an update is done when the
    stored Node already says what we wanted."""
    for _ in range(100):
        node = store.get(Node, settings.nodename)
        fresh = node is None
        if node is None:
            node = Node(settings.nodename, {})
        node = node.copy()  # type: ignore[assignment]
        bgp: dict[str, Any] = dict(node.spec.get("bgp") or {})
        if address is not None:
            bgp["ipv4Address"] = str(address)
        if settings.as_number:
            bgp["asNumber"] = settings.as_number
        if settings.rr_cluster_id:
            bgp["routeReflectorClusterID"] = settings.rr_cluster_id
        if bgp:
            node.spec["bgp"] = bgp
        node.spec["vxlanTunnelMACAddr"] = node_vtep_mac(node)
        if settings.labels:
            labels = dict(node.metadata.get("labels") or {})
            labels.update(settings.labels)
            node.metadata["labels"] = labels
        node.spec.setdefault("orchRefs", [{"nodeName": settings.nodename, "orchestrator": "k8s"}])
        if fresh:
            node.metadata["uid"] = str(uuid.uuid4())
        try:
            if fresh:
                return store.create(node)
            if node.to_json() == store.get(Node, settings.nodename).to_json():  # type: ignore[union-attr]
                return node
            return store.update(node)
        except (ResourceExists, RevisionConflict, ResourceNotFound):
            continue
        except OutcomeUnknown as exc:
            stored = read_to_settle(exc, lambda: store.get(Node, settings.nodename))
            if fresh and stored is not None and stored.metadata.get("uid") == node.metadata["uid"]:
                log.info("Node %s: create's reply was lost; it was applied", settings.nodename)
                return stored
            log.info("Node %s: write's reply was lost; reading it back", settings.nodename)
            continue
    raise StartupError(f"could not write Node {settings.nodename}: too many conflicts")


def check_address_unique(nodes: Iterable[Node], settings: AgentSettings, address: ipaddress.IPv4Interface) -> None:
    for other in nodes:
        if other.name != settings.nodename and other.ip == str(address.ip):
            raise StartupError(f"IP {address.ip} is already used by node {other.name}")


def ensure_default_pool(store: ResourceStore, settings: AgentSettings) -> IPPool | None:
    if settings.pool_cidr.lower() == "none":
        return None
    if any(p.version == 4 for p in store.list(IPPool)):
        return None
    ipip, vxlan = mode(settings.pool_ipip), mode(settings.pool_vxlan)
    pool = IPPool(DEFAULT_POOL_NAME, {
        "cidr": settings.pool_cidr or "192.168.0.0/16",
        "ipipMode": ipip,
        "vxlanMode": vxlan,
        "natOutgoing": settings.pool_nat_outgoing,
        "blockSize": settings.pool_block_size,
        "nodeSelector": "all()",
    })
    try:
        created = store.create(pool)
        log.info("created default pool %s (%s, ipip %s, vxlan %s)", pool.name, pool.cidr, ipip, vxlan)
        return created
    except ResourceExists:
        return None


def ensure_cluster_information(store: ResourceStore, settings: AgentSettings) -> ClusterInformation:
    cluster_type = "pycalico,bgp" if settings.backend == "bird" else "pycalico"
    try:
        return claim_cluster(store, settings.cluster_name, cluster_type)
    except ClusterMismatch as exc:
        raise StartupError(f"{exc}: refusing to register") from None


def _set_tunnel_field(node: Node, kind: str, value: str | None) -> None:
    if kind == "ipip":
        bgp = dict(node.spec.get("bgp") or {})
        if value:
            bgp["ipv4IPIPTunnelAddr"] = value
        else:
            bgp.pop("ipv4IPIPTunnelAddr", None)
        node.spec["bgp"] = bgp
    else:
        if value:
            node.spec["ipv4VXLANTunnelAddr"] = value
        else:
            node.spec.pop("ipv4VXLANTunnelAddr", None)


def ensure_tunnel_addresses(store: ResourceStore, ipam: Any, nodename: str,
                            prepare: Callable[[str, str], None] | None = None) -> Node:
    """allocateip: one tunnel address per enabled encapsulation, from a pool selecting this node.

    The handle is the truth: an address it already owns in a wanted pool is used (an
    earlier assignment whose Node update was lost, or whose own reply was lost and was
    settled by IPAM) rather than a second one assigned. A Node update whose reply was
    lost is settled by the next read of the Node. ``prepare(kind, address)`` runs for each
    address the Node is about to carry newly, before the Node is written (the agent puts it
    on its device first: peers route to it as soon as they see it)."""
    for _ in range(100):
        node = store.must_get(Node, nodename)
        pools = [p for p in store.list(IPPool) if p.version == 4 and not p.disabled]
        changed: Node = node.copy()  # type: ignore[assignment]
        for kind in ("ipip", "vxlan"):
            handle = tunnel_handle(kind, nodename)
            want_pools = [p for p in pools
                          if (p.ipip_mode if kind == "ipip" else p.vxlan_mode) != "Never"
                          and "Tunnel" in p.allowed_uses and p.selects_node(node.labels)]
            current = node.ipip_tunnel_addr if kind == "ipip" else node.vxlan_tunnel_addr
            if want_pools:
                owned = [str(ip) for ip in ipam.ips_by_handle(handle)
                         if any(ip in p.network for p in want_pools)]
                if current and current in owned and len(owned) == 1:
                    continue
                if len(owned) == 1:
                    if prepare is not None:
                        prepare(kind, owned[0])
                    _set_tunnel_field(changed, kind, owned[0])
                    log.info("%s tunnel address %s (already held by %s)", kind, owned[0], handle)
                    continue
                if current or owned:
                    ipam.release_by_handle(handle)
                ips = ipam.auto_assign(handle, tunnel_attrs(kind, nodename), nodename, num=1,
                                       use="Tunnel", pools=[p.name for p in want_pools])
                if prepare is not None:
                    prepare(kind, str(ips[0].ip))
                _set_tunnel_field(changed, kind, str(ips[0].ip))
                log.info("%s tunnel address %s", kind, ips[0].ip)
            elif current:
                ipam.release_by_handle(handle)
                _set_tunnel_field(changed, kind, None)
        if changed == node:
            return node
        try:
            return store.update(changed)
        except (RevisionConflict, ResourceNotFound):
            continue
        except OutcomeUnknown as exc:
            read_to_settle(exc, lambda: store.get(Node, nodename))  # etcd answers again; the loop re-reads
            continue
    raise StartupError("could not record tunnel addresses: too many conflicts")


def write_mtu(settings: AgentSettings, pools: list[IPPool], ifaces: list[autodetect.Interface]) -> int:
    mtu = pod_mtu(autodetect.host_mtu(ifaces), pools, settings.mtu)
    write_file(settings.mtu_file, f"{mtu}\n")
    return mtu
