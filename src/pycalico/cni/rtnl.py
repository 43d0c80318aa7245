"""The CNI hot path's rtnetlink requests, packed with ``struct``.

An ADD makes about eight requests (veth, link lookups, address, routes). pyroute2's
message classes spent ~60 µs of Python per request encoding them (measured with
yappi under 8 concurrent ADDs: the largest single item of the agent's CPU); these
few fixed layouts cost a few µs, and ADD and DEL no longer import pyroute2 (~120 ms,
most of the in-process fallback's start). pyroute2 stays for everything else (dumps,
CHECK), and ``tests/cni/test_rtnl.py`` checks that every message here decodes with
pyroute2's parser to the same fields.

Layouts (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/veth.h).
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE = 20, 21, 24

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
NLA_F_NESTED = 0x8000

IFF_UP = 1
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
# Routes as Felix and iproute2 make them (RTPROT_BOOT), not pyroute2's default "static".
RTPROT_BOOT = 3



class NetlinkError(OSError):
    """The kernel refused a request; ``code`` is the errno (as pyroute2's error has it)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(code, message or os.strerror(code))
        self.code = code


_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBi")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_ATTR = struct.Struct("=HH")  # rtattr: len, type
_U32 = struct.Struct("=I")


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length & 3)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind, b"".join(attrs))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def name(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def mac(kind: int, text: str) -> bytes:
    return attr(kind, bytes.fromhex(text.replace(":", "")))


def ipv4(kind: int, text: str) -> bytes:
    return attr(kind, socket.inet_aton(text))


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


class Rtnl:
    """A plain rtnetlink socket in the netns of the thread that made it; one per thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, msg_type: int, flags: int, body: bytes) -> list[bytes]:
        """Send one request; the reply messages (without the ACK). NetlinkError on an error."""
        self.seq += 1
        seq = self.seq
        self.sock.send(_HEADER.pack(_HEADER.size + len(body), msg_type, flags, seq, 0) + body)
        replies: list[bytes] = []
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, rtype, _, rseq, _ = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    return replies
                chunk = data[offset:offset + length]
                offset += (length + 3) & ~3
                if rseq != seq:
                    continue
                if rtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", chunk, _HEADER.size)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return replies
                if rtype == NLMSG_DONE:
                    return replies
                replies.append(chunk)
                if not flags & NLM_F_ACK:
                    return replies

    # ---- links -----------------------------------------------------------------------

    def veth_add(self, ifname: str, ifmac: str, peer: str, peer_netns_fd: int, peer_mac: str, mtu: int) -> None:
        """One RTM_NEWLINK: ``ifname`` here, up, and ``peer`` directly in the netns, down
        (the kernel refuses to open a veth end before its peer is linked: ENOTCONN)."""
        peer_msg = ifinfo() + name(IFLA_IFNAME, peer) + \
            u32(IFLA_NET_NS_FD, peer_netns_fd) + u32(IFLA_MTU, mtu) + mac(IFLA_ADDRESS, peer_mac)
        body = ifinfo(flags=IFF_UP, change=IFF_UP) + name(IFLA_IFNAME, ifname) + mac(IFLA_ADDRESS, ifmac) + \
            u32(IFLA_MTU, mtu) + nested(IFLA_LINKINFO, name(IFLA_INFO_KIND, "veth"),
                                        nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_msg)))
        self.request(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def link_index(self, ifname: str) -> int | None:
        try:
            replies = self.request(RTM_GETLINK, NLM_F_REQUEST, ifinfo() + name(IFLA_IFNAME, ifname))
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return struct.unpack_from("=i", replies[0], _HEADER.size + 4)[0] if replies else None

    def link_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, ifinfo(index, IFF_UP, IFF_UP))

    def link_del(self, index: int) -> None:
        self.request(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, ifinfo(index))

    # ---- addresses and routes --------------------------------------------------------

    def addr_add(self, index: int, address: str, prefixlen: int) -> None:
        body = _IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index) + \
            ipv4(IFA_LOCAL, address) + ipv4(IFA_ADDRESS, address)
        self.request(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def addr_del(self, index: int, address: str, prefixlen: int) -> None:
        body = _IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index) + \
            ipv4(IFA_LOCAL, address) + ipv4(IFA_ADDRESS, address)
        self.request(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, body)

    def route_add(self, dst: str, dst_len: int, oif: int, *, gateway: str = "", scope: int = RT_SCOPE_UNIVERSE,
                  priority: int = 0) -> None:
        body = _RTMSG.pack(socket.AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0) + \
            u32(RTA_TABLE, RT_TABLE_MAIN) + u32(RTA_OIF, oif)
        if dst_len:
            body += ipv4(RTA_DST, dst)
        if gateway:
            body += ipv4(RTA_GATEWAY, gateway)
        if priority:
            body += u32(RTA_PRIORITY, priority)
        self.request(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
