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
        """Only what the agent needs of Calico's block JSON (``ipam.AllocationBlock`` has
        the full type): read straight from the dict, since the agent parses every block of
        the cluster at start (20,000 at 20,000 nodes) and on every block write."""
        try:
            if data.get("deleted"):
                return None
            cidr = ipaddress.ip_network(data["cidr"])
            affinity = data.get("affinity") or ""
            allocations = data.get("allocations") or ()
            attributes = data.get("attributes") or ()
        except (KeyError, ValueError, TypeError, AttributeError):
            return None
        if cidr.version != 4:
            return None
        host = affinity[5:] if isinstance(affinity, str) and affinity.startswith("host:") else None
        borrowed = []
        for ordinal, idx in enumerate(allocations):
            if idx is None:
                continue
            try:
                attr = attributes[idx] or {}
            except (IndexError, TypeError):
                continue
            node = str(((attr.get("secondary") if isinstance(attr, dict) else None) or {}).get("node") or "")
            if node and node != host:
                borrowed.append((str(cidr.network_address + ordinal), node))
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
    # without BGP or encapsulation (Flannel's host-gw): peers no direct route can reach
    unroutable: dict[str, str] = field(default_factory=dict)  # node name -> why
    # remote prefixes BIRD routes (un-encapsulated pools, backend bird): a tunnel or direct route the
    # agent had for one stays until BIRD's route is in the kernel (live migration, dataplane.py)
    bird_routed: set[str] = field(default_factory=set)
    # remote prefixes of an encapsulated pool whose route cannot be built yet (the peer's or this
    # node's tunnel address for the pool's mode is not assigned yet, e.g. just after the pool's
    # mode changed): the route the agent has for one stays until the new one can replace it
    awaiting: set[str] = field(default_factory=set)


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


def _pool_ranges(pools: Iterable[IPPool]) -> list[tuple[int, int, int, IPPool]]:
    """(first address, last address, prefix length, pool) of each IPv4 pool, parsed once."""
    out = []
    for pool in pools:
        net = pool.network
        if net.version == 4:
            out.append((int(net.network_address), int(net.broadcast_address), net.prefixlen, pool))
    return out


def _pool_of(block: ipaddress.IPv4Network, ranges: list[tuple[int, int, int, IPPool]]) -> IPPool | None:
    """``pool_for`` over ``_pool_ranges``: the first pool the block lies in."""
    first = int(block.network_address)
    for start, end, prefixlen, pool in ranges:
        if start <= first <= end and block.prefixlen >= prefixlen:
            return pool
    return None


@dataclass(frozen=True)
class FelixParams:
    """The FelixConfiguration fields the agent honours (Felix's names and defaults)."""

    vxlan_vni: int = VXLAN_VNI
    vxlan_port: int = VXLAN_PORT
    vxlan_mtu: int = 0  # 0: host MTU - 50
    ipip_mtu: int = 0  # 0: host MTU - 20
    route_refresh_interval: float = 0.0  # 0: the agent's PYCALICO_RESYNC_INTERVAL

    FIELDS = {"vxlanVNI": "vxlan_vni", "vxlanPort": "vxlan_port", "vxlanMTU": "vxlan_mtu",
              "ipipMTU": "ipip_mtu", "routeRefreshInterval": "route_refresh_interval"}

    @classmethod
    def merge(cls, env: Mapping[str, str], *specs: Mapping[str, Any]) -> FelixParams:
        """Felix's precedence: ``FELIX_<NAME>`` env > node.<name> > default (pass specs highest first)."""
        values: dict[str, Any] = {}
        for json_name, attr in cls.FIELDS.items():
            raw: Any = env.get("FELIX_" + json_name.upper())
            if raw in (None, ""):
                raw = next((spec[json_name] for spec in specs if spec.get(json_name) not in (None, "")), None)
            if raw is None:
                continue
            try:
                values[attr] = _duration(raw) if attr == "route_refresh_interval" else int(raw)
            except (TypeError, ValueError):
                continue  # Felix ignores a bad value and keeps the default
        return cls(**values)

    def vxlan_device_mtu(self, host_mtu: int) -> int:
        return self.vxlan_mtu or host_mtu - VXLAN_OVERHEAD

    def ipip_device_mtu(self, host_mtu: int) -> int:
        return self.ipip_mtu or host_mtu - IPIP_OVERHEAD


def _duration(raw: Any) -> float:
    """``90``, ``"90s"``, ``"1m30s"``, ``"500ms"`` → seconds."""
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw).strip()
    total, number = 0.0, ""
    i = 0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text[i:i + 2] == "ms" else ch
        if unit not in units or not number:
            raise ValueError(f"not a duration: {raw!r}")
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    if number:
        total += float(number)
    return total


def pod_mtu(host_mtu: int, pools: Iterable[IPPool], override: int = 0, felix: FelixParams | None = None) -> int:
    """Felix: the smallest MTU among the enabled encapsulations (host MTU if none), unless overridden."""
    if override:
        return override
    felix = felix or FelixParams()
    mtu = host_mtu
    for pool in pools:
        if pool.disabled:
            continue
        if pool.vxlan_mode != "Never":
            mtu = min(mtu, felix.vxlan_device_mtu(host_mtu))
        if pool.ipip_mode != "Never":
            mtu = min(mtu, felix.ipip_device_mtu(host_mtu))
    return mtu


def vxlan_device(me: Node, address: str, felix: FelixParams, parent: str, host_mtu: int) -> VxlanDevice | None:
    """This node's ``vxlan.calico`` carrying ``address`` (None while the Node has no IPv4 address)."""
    my_if = me.ipv4_interface
    if my_if is None:
        return None
    return VxlanDevice(felix.vxlan_vni, felix.vxlan_port, str(my_if.ip), parent, node_vtep_mac(me), address,
                       felix.vxlan_device_mtu(host_mtu))


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
    felix: FelixParams | None = None,
) -> Desired:
    """The whole dataplane for ``nodename``.

    ``backend`` is ``bird`` (BIRD carries un-encapsulated pools), or ``vxlan``/``none``
    (no BGP: the agent also programs direct routes to same-subnet peers of
    un-encapsulated pools, Flannel's host-gw).
    """
    pools = [p for p in pools if p.version == 4]
    felix = felix or FelixParams()
    out = Desired()
    out.all_pools = sorted({p.cidr for p in pools})
    out.nat_pools = sorted({p.cidr for p in pools if p.nat_outgoing and not p.disabled})
    me = nodes.get(nodename)
    my_if = me.ipv4_interface if me is not None else None

    vxlan_on = any(p.vxlan_mode != "Never" for p in pools)
    ipip_on = any(p.ipip_mode != "Never" for p in pools)
    if me is not None and vxlan_on and me.vxlan_tunnel_addr:
        out.vxlan = vxlan_device(me, me.vxlan_tunnel_addr, felix, parent, host_mtu)
    if me is not None and ipip_on and me.ipip_tunnel_addr:
        out.ipip = IpipDevice(me.ipip_tunnel_addr, felix.ipip_device_mtu(host_mtu))

    if out.vxlan is not None:
        for node in nodes.values():
            if node.name == nodename or not node.vxlan_tunnel_addr or not node.ip:
                continue
            mac = node_vtep_mac(node)
            out.vxlan_neighbours[node.vxlan_tunnel_addr] = mac
            out.vxlan_fdb[mac] = node.ip

    # What every remote block's route needs of its owner, worked out once per node.
    peer_facts: dict[str, tuple[Node, str, bool] | None] = {}
    my_net = my_if.network if my_if is not None else None

    def facts(owner: str) -> tuple[Node, str, bool] | None:
        if owner not in peer_facts:
            peer = nodes.get(owner)
            ip = peer.ip if peer is not None else ""
            peer_facts[owner] = (peer, ip, my_net is not None and ipaddress.IPv4Address(ip) in my_net) \
                if peer is not None and ip else None
        return peer_facts[owner]

    def route_to(dst: str, pool: IPPool, owner: str) -> None:
        found = facts(owner)
        if found is None:
            return
        peer, ip, same_subnet = found
        route = _remote_route(dst, pool, peer, ip, same_subnet, out, parent, backend)
        if route is not None:
            out.routes[dst] = route
        elif pool.vxlan_mode != "Never" or pool.ipip_mode != "Never":
            out.awaiting.add(dst)
        elif backend == "bird" and pool.vxlan_mode == "Never" and pool.ipip_mode == "Never":
            out.bird_routed.add(dst)
        elif backend == "none" and pool.vxlan_mode == "Never" and pool.ipip_mode == "Never" and not same_subnet:
            out.unroutable[owner] = (f"node {owner} ({ip}) is outside this node's subnet "
                                     f"{my_if.network if my_if else '?'}: pool {pool.name} has no encapsulation "
                                     "and there is no BGP, so its block "
                                     f"{dst} gets no route (put every node in one subnet, or use VXLAN)")

    pool_ranges = _pool_ranges(pools)
    for block in blocks:
        pool = _pool_of(block.cidr, pool_ranges)
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


def _remote_route(dst: str, pool: IPPool, peer: Node, peer_ip: str, same_subnet: bool, out: Desired, parent: str,
                  backend: str) -> Route | None:
    direct = Route(dst, via=peer_ip, dev=parent, onlink=True) if same_subnet else None
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
            return Route(dst, via=peer_ip, dev=IPIP_DEVICE, onlink=True)
        return None
    # un-encapsulated pool: BIRD's job, unless there is no BGP at all
    if backend != "bird" and same_subnet:
        return direct
    return None
