"""The agent's route, neighbour and FDB writes as pipelined rtnetlink requests.

``ip -batch`` sends one request and waits for its answer before it parses the next
line; pyroute2 waits for each answer too and spends ~60 µs of Python encoding each
message. At 20,000 remote nodes the agent writes 60,000 entries at start: here the
messages are packed with ``struct`` (the layouts of ``pycalico.cni.rtnl``), sent 256
per ``send()``, and only the last of each ``send()`` asks for an acknowledgement (the
kernel answers the others only to refuse them), so the kernel's own insert cost is what
remains (docs/agent.md, "Programming 20,000 nodes", has the numbers).
``tests/agent/test_netlink.py`` decodes every message with pyroute2 and checks that
the kernel ends up with exactly what ``ip``/``bridge -batch`` make of the same lines.

Each request keeps the ``ip`` command it stands for, so a refused one is reported as
``ip`` would report it (the line and the kernel's error).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pycalico.agent.calc import Route
from pycalico.cni.rtnl import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTA_TABLE,
    RTM_NEWROUTE,
    RTN_UNICAST,
    ipv4,
    mac,
    u32,
)

NLM_F_REPLACE = 0x100
RTM_DELROUTE, RTM_NEWNEIGH, RTM_DELNEIGH = 25, 28, 29
RTN_BLACKHOLE = 6
RT_SCOPE_NOWHERE = 255
RTNH_F_ONLINK = 4
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7
CHUNK = 256  # requests per send(): even if every one is refused, the refusals fit the receive buffer

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, pad, ifindex, state, flags, type
_ERRNO = struct.Struct("=i")
_REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
_DELETE = NLM_F_REQUEST | NLM_F_ACK
# a delete of what is already gone has reached its goal
_GONE = {errno.ESRCH, errno.ENOENT}


def _prefix(cidr: str) -> tuple[str, int]:
    net, _, length = cidr.partition("/")
    return net, int(length or 32)


def route_message(route: Route, protocol: int, oif: int) -> tuple[int, bytes]:
    """RTM_NEWROUTE (create or replace) for ``route`` in the main table, as
    ``ip route replace <route.ip_args()> proto <protocol>`` sends it."""
    net, dst_len = _prefix(route.dst)
    flags = RTNH_F_ONLINK if route.onlink else 0
    if route.kind == "blackhole":
        kind, scope = RTN_BLACKHOLE, RT_SCOPE_UNIVERSE
    else:
        # iproute2 gives a route without a gateway link scope
        kind, scope = RTN_UNICAST, RT_SCOPE_LINK if (route.scope_link or not route.via) else RT_SCOPE_UNIVERSE
    body = _RTMSG.pack(socket.AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, protocol, scope, kind, flags) + \
        u32(RTA_TABLE, RT_TABLE_MAIN)
    if dst_len:
        body += ipv4(RTA_DST, net)
    if route.via:
        body += ipv4(RTA_GATEWAY, route.via)
    if oif:
        body += u32(RTA_OIF, oif)
    return RTM_NEWROUTE, body


def route_delete_message(dst: str, protocol: int, *, blackhole: bool = False) -> tuple[int, bytes]:
    """RTM_DELROUTE of ``dst`` in the main table, only if it carries ``protocol``."""
    net, dst_len = _prefix(dst)
    body = _RTMSG.pack(socket.AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, protocol, RT_SCOPE_NOWHERE,
                       RTN_BLACKHOLE if blackhole else 0, 0) + u32(RTA_TABLE, RT_TABLE_MAIN)
    if dst_len:
        body += ipv4(RTA_DST, net)
    return RTM_DELROUTE, body


def neigh_message(ip: str, lladdr: str, ifindex: int) -> tuple[int, bytes]:
    """A permanent ARP entry (``ip neigh replace <ip> lladdr <mac> dev <if> nud permanent``)."""
    return RTM_NEWNEIGH, _NDMSG.pack(socket.AF_INET, ifindex, NUD_PERMANENT, 0, 0) + \
        ipv4(NDA_DST, ip) + mac(NDA_LLADDR, lladdr)


def neigh_delete_message(ip: str, ifindex: int) -> tuple[int, bytes]:
    return RTM_DELNEIGH, _NDMSG.pack(socket.AF_INET, ifindex, 0, 0, 0) + ipv4(NDA_DST, ip)


def fdb_message(lladdr: str, dst: str, ifindex: int) -> tuple[int, bytes]:
    """A permanent VXLAN FDB entry (``bridge fdb replace <mac> dev <if> dst <ip> self permanent``)."""
    return RTM_NEWNEIGH, _NDMSG.pack(AF_BRIDGE, ifindex, NUD_PERMANENT, NTF_SELF, 0) + \
        mac(NDA_LLADDR, lladdr) + ipv4(NDA_DST, dst)


def fdb_delete_message(lladdr: str, dst: str, ifindex: int) -> tuple[int, bytes]:
    return RTM_DELNEIGH, _NDMSG.pack(AF_BRIDGE, ifindex, 0, NTF_SELF, 0) + \
        mac(NDA_LLADDR, lladdr) + ipv4(NDA_DST, dst)


@dataclass
class Batch:
    """Requests collected, then sent together by ``commit`` in the calling thread's netns.
    Each entry: (message type, flags, body, the ``ip`` line it stands for)."""

    requests: list[tuple[int, int, bytes, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _indexes: dict[str, int] = field(default_factory=dict)

    def ifindex(self, name: str) -> int | None:
        if name not in self._indexes:
            try:
                self._indexes[name] = socket.if_nametoindex(name)
            except OSError:
                return None
        return self._indexes[name]

    def _device(self, name: str, line: str) -> int | None:
        index = self.ifindex(name)
        if index is None:
            self.errors.append(f"{line}: Cannot find device \"{name}\"")
        return index

    def route_replace(self, route: Route, protocol: int) -> None:
        line = "route replace " + " ".join(route.ip_args()) + f" proto {protocol}"
        if route.dev:
            self._on_device(route.dev, line, _REPLACE, lambda oif: route_message(route, protocol, oif))
        else:
            kind, body = route_message(route, protocol, 0)
            self.requests.append((kind, _REPLACE, body, line))

    def route_delete(self, dst: str, protocol: int, *, blackhole: bool = False) -> None:
        kind, body = route_delete_message(dst, protocol, blackhole=blackhole)
        line = f"route del {'blackhole ' if blackhole else ''}{dst} proto {protocol}"
        self.requests.append((kind, _DELETE, body, line))

    def _on_device(self, dev: str, line: str, flags: int, build: Callable[[int], tuple[int, bytes]]) -> None:
        index = self._device(dev, line)
        if index is not None:
            kind, body = build(index)
            self.requests.append((kind, flags, body, line))

    def neigh_replace(self, ip: str, lladdr: str, dev: str) -> None:
        self._on_device(dev, f"neigh replace {ip} lladdr {lladdr} dev {dev} nud permanent", _REPLACE,
                        lambda index: neigh_message(ip, lladdr, index))

    def neigh_delete(self, ip: str, dev: str) -> None:
        self._on_device(dev, f"neigh del {ip} dev {dev}", _DELETE, lambda index: neigh_delete_message(ip, index))

    def fdb_replace(self, lladdr: str, dst: str, dev: str) -> None:
        self._on_device(dev, f"fdb replace {lladdr} dev {dev} dst {dst} self permanent", _REPLACE,
                        lambda index: fdb_message(lladdr, dst, index))

    def fdb_delete(self, lladdr: str, dst: str, dev: str) -> None:
        self._on_device(dev, f"fdb del {lladdr} dev {dev} dst {dst} self", _DELETE,
                        lambda index: fdb_delete_message(lladdr, dst, index))

    def commit(self) -> list[str]:
        """Send every request; the refused ones as ``<ip line>: <kernel error>`` (with the
        lines that named a missing device). Requests after a refused one still go, as
        with ``ip -force -batch``."""
        errors, self.errors = self.errors, []
        if not self.requests:
            return errors
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            sock.bind((0, 0))
            for start in range(0, len(self.requests), CHUNK):
                errors += _exchange(sock, self.requests[start:start + CHUNK], start + 1)
        finally:
            sock.close()
        self.requests = []
        return errors


def _exchange(sock: socket.socket, chunk: list[tuple[int, int, bytes, str]], first_seq: int) -> list[str]:
    """One ``send()`` of the chunk. The kernel handles rtnetlink requests in the sender's own
    ``send()``, in order, and answers a request without NLM_F_ACK only when it fails: so only
    the last request asks for an acknowledgement, and once that arrives every refusal before
    it is queued ahead of it. (An acknowledgement each cost one ``recv()`` per request.)"""
    last = first_seq + len(chunk) - 1
    sock.send(b"".join(_HEADER.pack(_HEADER.size + len(body), kind,
                                    flags if first_seq + i == last else flags & ~NLM_F_ACK, first_seq + i, 0) + body
                       for i, (kind, flags, body, _) in enumerate(chunk)))
    errors: list[str] = []
    done = False
    while not done:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                break
            if kind == NLMSG_ERROR and first_seq <= seq <= last:
                done = done or seq == last
                code = -_ERRNO.unpack_from(data, offset + _HEADER.size)[0]
                request_kind, _, _, line = chunk[seq - first_seq]
                if code and not (code in _GONE and request_kind in (RTM_DELROUTE, RTM_DELNEIGH)):
                    errors.append(f"{line}: {os.strerror(code)}")
            offset += (length + 3) & ~3
    return errors
