"""From datastore state to the dataplane this node should have — pure functions, no I/O.

The inputs are the model's resources plus the IPAM blocks (CIDR → affine host);
the output is a ``Desired`` value the dataplane layer diffs against the kernel.
Felix's rules (calico-internals §4.2): blackhole per local block; per remote
block a tunnel route (IPIP ``via <nodeIP> dev tunl0 onlink``, VXLAN ``via
<peer tunnel IP> dev vxlan.calico onlink`` with permanent neighbour + FDB) or,
for CrossSubnet peers in our own subnet, a direct route via the peer's node IP.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.ipam import AllocationBlock
from pycalico.model import IPPool, Node, WorkloadEndpoint

VXLAN_DEVICE = "vxlan.calico"
IPIP_DEVICE = "tunl0"
VXLAN_VNI = 4096
VXLAN_PORT = 4789
IPIP_OVERHEAD = 20
VXLAN_OVERHEAD = 50


@dataclass(frozen=True)
class Block:
    """An IPAM block as the agent needs it: its CIDR, the host it is affine to (or None),
    and the addresses in it that other hosts borrowed (``(ip, node)``)."""

    cidr: ipaddress.IPv4Network
    host: str | None
    borrowed: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Block | None:
        try:
            block = AllocationBlock.from_json(data)
            cidr = ipaddress.ip_network(block.cidr)
        except (KeyError, ValueError, TypeError):
            return None
        if cidr.version != 4 or block.deleted:
            return None
        host = block.host()
        borrowed = []
        for ordinal, attr in block.allocated():
            node = str(((attr or {}).get("secondary") or {}).get("node") or "")
            if node and node != host:
                borrowed.append((str(block.address(ordinal)), node))
        return cls(cidr, host, tuple(borrowed))  # type: ignore[arg-type]


@dataclass(frozen=True, order=True)
class Route:
    dst: str  # CIDR
    kind: str = "unicast"  # unicast | blackhole
    via: str | None = None
    dev: str | None = None
    onlink: bool = False
    scope_link: bool = False

    def ip_args(self) -> list[str]:
        """Arguments after ``ip route replace``."""
        if self.kind == "blackhole":
            return ["blackhole", self.dst]
        args = [self.dst]
        if self.via:
            args += ["via", self.via]
        if self.dev:
            args += ["dev", self.dev]
        if self.onlink:
            args.append("onlink")
        if self.scope_link:
            args += ["scope", "link"]
        return args


@dataclass(frozen=True)
class VxlanDevice:
    vni: int
    port: int
    local: str
    parent: str
    mac: str
    address: str  # tunnel IP, installed as /32
    mtu: int


@dataclass(frozen=True)
class IpipDevice:
    address: str  # installed as /32
    mtu: int


@dataclass
class Desired:
    routes: dict[str, Route] = field(default_factory=dict)
    # local workload /32 routes: the CNI plugin made them; the agent checks and repairs only
    workload_routes: dict[str, Route] = field(default_factory=dict)
    vxlan: VxlanDevice | None = None
    vxlan_neighbours: dict[str, str] = field(default_factory=dict)  # peer tunnel IP -> VTEP MAC
    vxlan_fdb: dict[str, str] = field(default_factory=dict)  # VTEP MAC -> peer node IP
    ipip: IpipDevice | None = None
    nat_pools: list[str] = field(default_factory=list)  # natOutgoing pool CIDRs
    all_pools: list[str] = field(default_factory=list)


def vxlan_mac(nodename: str) -> str:
    """Felix's deterministic VTEP MAC: 0x66 then the first 5 bytes of sha1(nodename)."""
    digest = hashlib.sha1(nodename.encode()).digest()
    return ":".join(f"{b:02x}" for b in bytes([0x66]) + digest[:5])


def node_vtep_mac(node: Node) -> str:
    return (node.vxlan_mac or vxlan_mac(node.name)).lower()


def pool_for(block: ipaddress.IPv4Network, pools: Iterable[IPPool]) -> IPPool | None:
    for pool in pools:
        net = pool.network
        if net.version == 4 and block.subnet_of(net):  # type: ignore[arg-type]
            return pool
    return None


def pod_mtu(host_mtu: int, pools: Iterable[IPPool], override: int = 0) -> int:
    """Host MTU minus the largest enabled encapsulation overhead, unless overridden."""
    if override:
        return override
    overhead = 0
    for pool in pools:
        if pool.disabled:
            continue
        if pool.vxlan_mode != "Never":
            overhead = max(overhead, VXLAN_OVERHEAD)
        if pool.ipip_mode != "Never":
            overhead = max(overhead, IPIP_OVERHEAD)
    return host_mtu - overhead


def compute(
    nodename: str,
    nodes: Mapping[str, Node],
    pools: Iterable[IPPool],
    blocks: Iterable[Block],
    weps: Iterable[WorkloadEndpoint] = (),
    *,
    parent: str = "eth0",
    host_mtu: int = 1500,
    backend: str = "bird",
) -> Desired:
    """The whole dataplane for ``nodename``.

    ``backend`` is ``bird`` (BIRD carries un-encapsulated pools), or ``vxlan``/``none``
    (no BGP: the agent also programs direct routes to same-subnet peers of
    un-encapsulated pools, Flannel's host-gw).
    """
    pools = [p for p in pools if p.version == 4]
    out = Desired()
    out.all_pools = sorted({p.cidr for p in pools})
    out.nat_pools = sorted({p.cidr for p in pools if p.nat_outgoing and not p.disabled})
    me = nodes.get(nodename)
    my_if = me.ipv4_interface if me is not None else None

    vxlan_on = any(p.vxlan_mode != "Never" for p in pools)
    ipip_on = any(p.ipip_mode != "Never" for p in pools)
    if me is not None and my_if is not None and vxlan_on and me.vxlan_tunnel_addr:
        out.vxlan = VxlanDevice(VXLAN_VNI, VXLAN_PORT, str(my_if.ip), parent, node_vtep_mac(me),
                                me.vxlan_tunnel_addr, host_mtu - VXLAN_OVERHEAD)
    if me is not None and ipip_on and me.ipip_tunnel_addr:
        out.ipip = IpipDevice(me.ipip_tunnel_addr, host_mtu - IPIP_OVERHEAD)

    if out.vxlan is not None:
        for node in nodes.values():
            if node.name == nodename or not node.vxlan_tunnel_addr or not node.ip:
                continue
            mac = node_vtep_mac(node)
            out.vxlan_neighbours[node.vxlan_tunnel_addr] = mac
            out.vxlan_fdb[mac] = node.ip

    def route_to(dst: str, pool: IPPool, owner: str) -> None:
        peer = nodes.get(owner)
        if peer is None or not peer.ip:
            return
        same_subnet = my_if is not None and ipaddress.IPv4Address(peer.ip) in my_if.network
        route = _remote_route(dst, pool, peer, same_subnet, out, parent, backend)
        if route is not None:
            out.routes[dst] = route

    for block in blocks:
        pool = pool_for(block.cidr, pools)
        if pool is None:
            continue
        # an address another node borrowed from this block: a /32 towards that node (Felix)
        for ip, owner in block.borrowed:
            if owner != nodename:
                route_to(f"{ip}/32", pool, owner)
        if block.host is None:
            continue
        dst = str(block.cidr)
        if block.host == nodename:
            if block.cidr.prefixlen < 32:
                out.routes[dst] = Route(dst, "blackhole")
            continue
        route_to(dst, pool, block.host)

    for wep in weps:
        if wep.node != nodename or not wep.interface_name:
            continue
        for net in wep.ip_networks:
            iface = ipaddress.ip_interface(net)
            if iface.version != 4:
                continue
            dst = f"{iface.ip}/32"
            out.workload_routes[dst] = Route(dst, dev=wep.interface_name, scope_link=True)
    return out


def _remote_route(dst: str, pool: IPPool, peer: Node, same_subnet: bool, out: Desired, parent: str,
                  backend: str) -> Route | None:
    direct = Route(dst, via=peer.ip, dev=parent, onlink=True)
    vxlan = pool.vxlan_mode
    if vxlan != "Never":
        if vxlan == "CrossSubnet" and same_subnet:
            return direct
        if out.vxlan is not None and peer.vxlan_tunnel_addr:
            return Route(dst, via=peer.vxlan_tunnel_addr, dev=VXLAN_DEVICE, onlink=True)
        return None
    ipip = pool.ipip_mode
    if ipip != "Never":
        if ipip == "CrossSubnet" and same_subnet:
            return direct
        if out.ipip is not None:
            return Route(dst, via=peer.ip, dev=IPIP_DEVICE, onlink=True)
        return None
    # un-encapsulated pool: BIRD's job, unless there is no BGP at all
    if backend != "bird" and same_subnet:
        return direct
    return None
