"""What BIRD should do on one node, from datastore state — pure, no I/O.

Calico's confd rules (calico-internals §5.2–5.3): node-to-node mesh unless a
node is a route reflector; BGPPeers global or per node (``node`` or
``nodeSelector``), to an IP or to the nodes a ``peerSelector`` picks (with the
reverse peering on the selected side); ``rr client`` towards iBGP peers outside
the reflector's cluster; ``passive`` towards Calico nodes with a higher IP, so
two nodes never race to open one session. Pool routes only go to the kernel
for un-encapsulated pools (the agent owns IPIP and VXLAN routes).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from pycalico.model import DEFAULT_AS, BGPConfiguration, BGPPeer, IPPool, Node
from pycalico.model.resources import split_peer_ip
from pycalico.model.selector import matches

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Peer:
    name: str
    ip: str
    asn: int
    kind: str  # mesh | global | node
    port: int | None = None
    passive: bool = False
    rr_client: bool = False
    source_address: str = ""
    multihop: bool = False
    password: str = ""
    keep_next_hop: bool = False
    next_hop_self: bool = False
    restart_time: int = 0  # graceful restart time, 0 = BIRD's default (120 s)
    allow_local_as: int = 0
    ttl_security: int = 0  # hops; 0 = off


@dataclass(frozen=True)
class PoolRule:
    cidr: str
    to_kernel: bool  # False for VXLAN/IPIP pools: the agent programs those routes
    export: bool  # False with disableBGPExport


@dataclass
class BirdConfig:
    nodename: str
    router_id: str
    node_ip: str
    asn: int
    uplink: str
    rr_cluster_id: str = ""
    listen_port: int = 179
    peers: list[Peer] = field(default_factory=list)
    pools: list[PoolRule] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    log_level: str = "Info"
    service_cidrs: list[str] = field(default_factory=list)  # advertised, never programmed here
    ignored_interfaces: list[str] = field(default_factory=list)


def peer_name(kind: str, ip: str, port: int | None = None) -> str:
    prefix = {"mesh": "Mesh_", "global": "Global_", "node": "Node_"}[kind]
    name = prefix + ip.replace(".", "_").replace(":", "_")
    if port and port != 179:
        name += f"_port_{port}"
    return name


def _ip_key(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(ip)


def router_id(node: Node, override: str = "") -> str:
    if override == "hash":
        digest = hashlib.sha256(node.name.encode()).digest()
        return str(ipaddress.IPv4Address(digest[:4]))
    if override:
        return str(ipaddress.IPv4Address(override))
    return node.ip


# (what, a BGPPassword field or None) -> the password, "" for none, None to leave the peer out
# (a referenced secret that cannot be read). The caller does the reading: this module does no I/O.
PasswordResolver = Callable[[str, Any], "str | None"]


def _no_passwords(what: str, field: Any) -> str:
    return ""


def compute_peers(me: Node, nodes: Mapping[str, Node], bgp: BGPConfiguration, peers: Iterable[BGPPeer],
                  password: PasswordResolver = _no_passwords) -> list[Peer]:
    global_as = bgp.as_number
    # every Calico node listens on the global listenPort: peers that are nodes are dialled there
    node_port = bgp.listen_port if bgp.listen_port != 179 else None
    my_as = me.as_number or global_as
    my_ip = me.ip
    mine: dict[str, Peer] = {}
    others = [n for n in nodes.values() if n.name != me.name and n.ip]

    def add(peer: Peer) -> None:
        if peer.ip == my_ip or peer.ip in mine:
            return
        mine[peer.ip] = peer

    mesh_restart = _seconds(bgp.spec.get("nodeMeshMaxRestartTime"))

    def calico_peer(kind: str, node: Node, options: BGPPeer | None = None, secret: str = "") -> Peer:
        asn = node.as_number or global_as
        rr_client = bool(me.rr_cluster_id) and asn == my_as and node.rr_cluster_id != me.rr_cluster_id
        extra = _peer_options(options) if options is not None else {"restart_time": mesh_restart}
        return Peer(peer_name(kind, node.ip, node_port), node.ip, asn, kind, port=node_port,
                    passive=int(_ip_key(node.ip)) > int(_ip_key(my_ip)), rr_client=rr_client, source_address=my_ip,
                    password=secret, **extra)

    peer_list = sorted(peers, key=lambda p: p.name)
    for p in peer_list:
        kind = "global" if p.is_global() else "node"
        applies = p.applies_to(me.name, me.labels)
        reverse = bool(p.peer_selector) and matches(p.peer_selector, me.labels)
        secret = password(f"BGPPeer {p.name} spec.password", p.spec.get("password")) if applies or reverse else ""
        if secret is None:
            continue
        if applies:
            if p.peer_ip:
                ip, port = split_peer_ip(p.peer_ip)
                asn = p.as_number or global_as
                source = my_ip if p.spec.get("sourceAddress", "UseNodeIP") == "UseNodeIP" else ""
                options = _peer_options(p)
                add(Peer(peer_name(kind, ip, port), ip, asn, kind, port=port, source_address=source,
                         multihop=asn == my_as and not options["ttl_security"],
                         rr_client=bool(me.rr_cluster_id) and asn == my_as, password=secret, **options))
            elif p.peer_selector:
                for node in sorted(others, key=lambda n: _ip_key(n.ip)):
                    if matches(p.peer_selector, node.labels):
                        add(calico_peer(kind, node, p, secret))
        # reverse peering: the nodes this peer's selector picks peer back with its targets
        if reverse:
            for node in sorted(others, key=lambda n: _ip_key(n.ip)):
                if p.applies_to(node.name, node.labels):
                    add(calico_peer(kind, node, p, secret))
    if bgp.node_to_node_mesh and not me.rr_cluster_id:
        mesh_secret = password("BGPConfiguration default spec.nodeMeshPassword", bgp.spec.get("nodeMeshPassword"))
        for node in sorted(others, key=lambda n: _ip_key(n.ip)):
            if not node.rr_cluster_id and mesh_secret is not None:
                add(calico_peer("mesh", node, secret=mesh_secret))
    return sorted(mine.values(), key=lambda p: (p.kind != "mesh", _ip_key(p.ip)))


def _seconds(raw: object) -> int:
    """A Go duration (``120s``, ``2m``, ``1h0m0s``) or a number of seconds; 0 when unset or bad."""
    if raw in (None, ""):
        return 0
    if isinstance(raw, int | float):
        return int(raw)
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    for ch in str(raw).strip():
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * units[ch]
            number = ""
        else:
            return 0
    return int(total + (float(number) if number else 0))


def _peer_options(p: BGPPeer) -> dict[str, Any]:
    """BGPPeer fields that shape the session (Calico's names)."""
    spec = p.spec
    mode = spec.get("nextHopMode") or "Auto"
    return {
        "keep_next_hop": bool(spec.get("keepOriginalNextHop")) or mode == "Keep",
        "next_hop_self": mode == "Self",
        "restart_time": _seconds(spec.get("maxRestartTime")),
        "allow_local_as": int(spec.get("numAllowedLocalASNumbers") or 0),
        "ttl_security": int(spec.get("ttlSecurity") or 0),
    }


def compute(nodename: str, nodes: Mapping[str, Node], bgp: BGPConfiguration | None, peers: Iterable[BGPPeer],
            pools: Iterable[IPPool], blocks: Iterable[str], *, uplink: str = "", router_id_override: str = "",
            programs_ipip: bool = True, password: PasswordResolver = _no_passwords) -> BirdConfig | None:
    """None when this node has no IPv4 address yet (BIRD cannot start without a router id)."""
    me = nodes.get(nodename)
    if me is None or not me.ip:
        return None
    bgp = bgp or BGPConfiguration("default", {})
    pool_rules = []
    for pool in sorted(pools, key=lambda p: p.cidr):
        if pool.version != 4:
            continue
        encap = pool.vxlan_mode != "Never" or (pool.ipip_mode != "Never" and programs_ipip)
        pool_rules.append(PoolRule(pool.cidr, not encap, not pool.disable_bgp_export))
    pool_nets = [ipaddress.ip_network(r.cidr) for r in pool_rules]
    local_blocks = sorted({b for b in blocks
                           if ipaddress.ip_network(b).prefixlen < 32
                           and any(ipaddress.ip_network(b).subnet_of(n) for n in pool_nets)},  # type: ignore[arg-type]
                          key=lambda b: ipaddress.ip_network(b))
    services: list[str] = []
    for field_name in ("serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs"):
        for item in bgp.spec.get(field_name) or []:
            net = ipaddress.ip_network(str((item or {}).get("cidr", "")), strict=False)
            if net.version == 4 and str(net) not in services:
                services.append(str(net))
    return BirdConfig(
        service_cidrs=services,
        ignored_interfaces=[str(i) for i in bgp.spec.get("ignoredInterfaces") or []],
        nodename=nodename,
        router_id=router_id(me, router_id_override),
        node_ip=me.ip,
        asn=me.as_number or bgp.as_number or DEFAULT_AS,
        uplink=uplink,
        rr_cluster_id=me.rr_cluster_id,
        listen_port=bgp.listen_port,
        peers=compute_peers(me, nodes, bgp, peers, password),
        pools=pool_rules,
        blocks=local_blocks,
        log_level=bgp.log_severity,
    )


_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)


def render(config: BirdConfig) -> str:
    return _env.get_template("bird.conf.j2").render(c=config)
