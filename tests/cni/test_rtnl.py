"""The hand-packed rtnetlink messages decode, with pyroute2's own parser, to exactly
the fields meant; and a real veth made with them comes up as the plugin needs."""

from __future__ import annotations

import os
import struct
import subprocess
import uuid

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pycalico.cni import rtnl
from pycalico.cni.dataplane import in_netns, open_netns


class Capture(rtnl.Rtnl):
    """Keeps the last request instead of sending it."""

    def __init__(self) -> None:
        self.seq = 0
        self.sent: list[tuple[int, int, bytes]] = []

    def request(self, msg_type: int, flags: int, body: bytes) -> list[bytes]:
        self.sent.append((msg_type, flags, body))
        return []


def decode(cls: type, msg_type: int, flags: int, body: bytes):  # type: ignore[no-untyped-def]
    data = struct.pack("=IHHII", 16 + len(body), msg_type, flags, 1, 0) + body
    msg = cls(data)
    msg.decode()
    assert msg["header"]["length"] == len(data)
    return msg


def test_veth_request_decodes_to_the_intended_fields() -> None:
    cap = Capture()
    cap.veth_add("cali0123456789a", "ee:ee:ee:ee:ee:ee", "eth0", 7, "02:11:22:33:44:55", 1440)
    msg_type, flags, body = cap.sent[0]
    assert msg_type == rtnl.RTM_NEWLINK
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    msg = decode(ifinfmsg, msg_type, flags, body)
    assert (msg["flags"], msg["change"]) == (rtnl.IFF_UP, rtnl.IFF_UP)
    assert msg.get_attr("IFLA_IFNAME") == "cali0123456789a"
    assert msg.get_attr("IFLA_ADDRESS") == "ee:ee:ee:ee:ee:ee"
    assert msg.get_attr("IFLA_MTU") == 1440
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert (peer["flags"], peer["change"]) == (0, 0)
    assert peer.get_attr("IFLA_IFNAME") == "eth0" and peer.get_attr("IFLA_NET_NS_FD") == 7
    assert peer.get_attr("IFLA_MTU") == 1440 and peer.get_attr("IFLA_ADDRESS") == "02:11:22:33:44:55"


def test_address_and_route_requests_decode_to_the_intended_fields() -> None:
    cap = Capture()
    cap.addr_add(5, "10.1.2.3", 32)
    cap.route_add("169.254.1.1", 32, 5, scope=rtnl.RT_SCOPE_LINK)
    cap.route_add("0.0.0.0", 0, 5, gateway="169.254.1.1")
    cap.addr_del(5, "10.1.2.3", 32)
    for sent in (cap.sent[0], cap.sent[3]):
        addr = decode(ifaddrmsg, *sent)
        assert (addr["family"], addr["prefixlen"], addr["index"]) == (2, 32, 5)
        assert addr.get_attr("IFA_LOCAL") == "10.1.2.3" and addr.get_attr("IFA_ADDRESS") == "10.1.2.3"
    assert (cap.sent[0][0], cap.sent[3][0]) == (rtnl.RTM_NEWADDR, rtnl.RTM_DELADDR)
    link, default = decode(rtmsg, *cap.sent[1]), decode(rtmsg, *cap.sent[2])
    for route in (link, default):
        assert (route["family"], route["table"], route["proto"], route["type"]) == (2, 254, rtnl.RTPROT_BOOT, 1)
        assert route.get_attr("RTA_OIF") == 5 and route.get_attr("RTA_TABLE") == 254
    assert (link["dst_len"], link["scope"], link.get_attr("RTA_DST")) == (32, 253, "169.254.1.1")
    assert link.get_attr("RTA_GATEWAY") is None
    assert (default["dst_len"], default["scope"], default.get_attr("RTA_DST")) == (0, 0, None)
    assert default.get_attr("RTA_GATEWAY") == "169.254.1.1"


def test_link_requests_decode_to_the_intended_fields() -> None:
    cap = Capture()
    cap.link_index("cali1")
    cap.link_up(9)
    cap.link_del(9)
    get, up, delete = (decode(ifinfmsg, *sent) for sent in cap.sent)
    assert cap.sent[0][:2] == (rtnl.RTM_GETLINK, rtnl.NLM_F_REQUEST) and get.get_attr("IFLA_IFNAME") == "cali1"
    assert (up["index"], up["flags"], up["change"]) == (9, rtnl.IFF_UP, rtnl.IFF_UP)
    assert cap.sent[2][0] == rtnl.RTM_DELLINK and delete["index"] == 9


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
def test_a_real_veth_made_with_them() -> None:
    ns = f"rt{uuid.uuid4().hex[:8]}"
    host = f"rtv{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    conn = rtnl.Rtnl()
    nsfd = open_netns(f"/run/netns/{ns}")
    try:
        conn.veth_add(host, "ee:ee:ee:ee:ee:ee", "eth0", nsfd, "02:aa:bb:cc:dd:ee", 1400)
        with in_netns(nsfd):
            pod = rtnl.Rtnl()
        try:
            index = pod.link_index("eth0")
            assert index is not None and conn.link_index(host) is not None
            pod.link_up(index)
            pod.addr_add(index, "10.99.0.6", 32)
            pod.addr_del(index, "10.99.0.6", 32)
            pod.addr_add(index, "10.99.0.7", 32)
            pod.route_add("169.254.1.1", 32, index, scope=rtnl.RT_SCOPE_LINK)
            pod.route_add("0.0.0.0", 0, index, gateway="169.254.1.1")
        finally:
            pod.close()
        show = subprocess.run(["ip", "-n", ns, "-o", "link", "show", "eth0"], capture_output=True, text=True,
                              check=True).stdout
        assert "<BROADCAST,MULTICAST,UP,LOWER_UP>" in show and "mtu 1400" in show and "02:aa:bb:cc:dd:ee" in show
        addrs = subprocess.run(["ip", "-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"], capture_output=True,
                               text=True, check=True).stdout
        assert " 10.99.0.7/32 " in addrs and "10.99.0.6" not in addrs
        routes = subprocess.run(["ip", "-d", "-n", ns, "route"], capture_output=True, text=True, check=True).stdout
        assert "unicast default via 169.254.1.1 dev eth0 proto boot scope global" in routes
        assert "unicast 169.254.1.1 dev eth0 proto boot scope link" in routes
        with pytest.raises(rtnl.NetlinkError):
            conn.veth_add(host, "ee:ee:ee:ee:ee:ee", "eth1", nsfd, "02:aa:bb:cc:dd:ef", 1400)  # EEXIST
        host_index = conn.link_index(host)
        assert host_index is not None
        conn.link_del(host_index)
        assert conn.link_index(host) is None
    finally:
        os.close(nsfd)
        conn.close()
        subprocess.run(["ip", "link", "del", host], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], check=False)
