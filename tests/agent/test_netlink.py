"""The agent's pipelined rtnetlink writes: every message decodes with pyroute2's parser
to the fields meant, and in a real namespace they leave the kernel exactly as
``ip``/``bridge -batch`` leave it for the same lines (the tools the agent used before);
a refused request is reported with its line and the kernel's reason, and the rest
still go in."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Callable, Iterator

import pytest
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pycalico.agent import netlink
from pycalico.agent.calc import Route
from tests.support.topology import in_netns

pytestmark = pytest.mark.netns

PROTO = 80
VXLAN = "vxlan.calico"


def decode(cls: type, msg_type: int, body: bytes):  # type: ignore[no-untyped-def]
    data = struct.pack("=IHHII", 16 + len(body), msg_type, 0, 1, 0) + body
    msg = cls(data)
    msg.decode()
    assert msg["header"]["length"] == len(data)
    return msg


def test_route_messages_decode_to_the_intended_fields() -> None:
    kind, body = netlink.route_message(Route("10.64.1.0/26", via="10.83.0.7", dev=VXLAN, onlink=True), PROTO, 9)
    msg = decode(rtmsg, kind, body)
    assert kind == netlink.RTM_NEWROUTE
    assert (msg["dst_len"], msg["table"], msg["proto"], msg["scope"], msg["type"]) == (26, 254, PROTO, 0, 1)
    assert msg["flags"] == netlink.RTNH_F_ONLINK
    assert (msg.get_attr("RTA_DST"), msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF")) == \
        ("10.64.1.0", "10.83.0.7", 9)
    kind, body = netlink.route_message(Route("10.64.2.0/26", "blackhole"), PROTO, 0)
    msg = decode(rtmsg, kind, body)
    assert (msg["type"], msg["scope"], msg.get_attr("RTA_OIF"), msg.get_attr("RTA_GATEWAY")) == (6, 0, None, None)
    kind, body = netlink.route_message(Route("10.64.3.4/32", dev="cali1", scope_link=True), PROTO, 4)
    assert decode(rtmsg, kind, body)["scope"] == 253
    kind, body = netlink.route_delete_message("10.64.1.0/26", PROTO)
    msg = decode(rtmsg, kind, body)
    assert kind == netlink.RTM_DELROUTE and (msg["proto"], msg["scope"], msg.get_attr("RTA_DST")) == \
        (PROTO, 255, "10.64.1.0")


def test_neighbour_and_fdb_messages_decode_to_the_intended_fields() -> None:
    kind, body = netlink.neigh_message("10.83.0.7", "66:01:02:03:04:05", 9)
    msg = decode(ndmsg, kind, body)
    assert (msg["family"], msg["ifindex"], msg["state"], msg["flags"]) == (2, 9, netlink.NUD_PERMANENT, 0)
    assert (msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")) == ("10.83.0.7", "66:01:02:03:04:05")
    kind, body = netlink.fdb_message("66:01:02:03:04:05", "172.16.0.7", 9)
    msg = decode(ndmsg, kind, body)
    assert (msg["family"], msg["state"], msg["flags"]) == (netlink.AF_BRIDGE, netlink.NUD_PERMANENT, netlink.NTF_SELF)
    assert (msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")) == ("172.16.0.7", "66:01:02:03:04:05")
    kind, body = netlink.fdb_delete_message("66:01:02:03:04:05", "172.16.0.7", 9)
    assert kind == netlink.RTM_DELNEIGH and decode(ndmsg, kind, body)["flags"] == netlink.NTF_SELF


def _in(ns: str, fn: Callable[[], list[str]]) -> list[str]:
    with in_netns(ns):
        return fn()


def _sh(*argv: str, stdin: str | None = None) -> str:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def pair(unique: str) -> Iterator[tuple[str, str]]:
    """Two namespaces with the same uplink and VXLAN device: one for the tools, one for ours."""
    names = (f"{unique}-ip", f"{unique}-nl")
    try:
        for ns in names:
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
            _sh("ip", "-n", ns, "addr", "add", "172.16.0.1/16", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "eth1", "up")
            _sh("ip", "-n", ns, "link", "add", VXLAN, "type", "vxlan", "id", "4096", "dstport", "4789",
                "local", "172.16.0.1", "dev", "eth0", "nolearning")
            _sh("ip", "-n", ns, "link", "set", VXLAN, "up")
        yield names
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


ROUTES = [Route(f"10.64.{i}.0/26", via=f"10.83.0.{i + 2}", dev=VXLAN, onlink=True) for i in range(50)] + \
    [Route("10.65.0.0/26", "blackhole"), Route("10.66.0.0/24", via="172.16.0.9"),
     Route("10.67.0.0/24", dev="eth1")]


def _state(ns: str) -> tuple[list[dict[str, object]], list[dict[str, object]], list[dict[str, object]]]:
    routes = json.loads(_sh("ip", "-n", ns, "-j", "-4", "route", "show", "table", "main", "proto", str(PROTO)))
    neigh = json.loads(_sh("ip", "-n", ns, "-j", "-4", "neigh", "show", "dev", VXLAN))
    fdb = [e for e in json.loads(_sh("ip", "netns", "exec", ns, "bridge", "-j", "fdb", "show", "dev", VXLAN))
           if e.get("dst")]
    def ordered(entries: list[dict[str, object]]) -> list[dict[str, object]]:
        return sorted(entries, key=lambda e: json.dumps(e, sort_keys=True))

    return ordered(routes), ordered(neigh), ordered(fdb)


def test_the_kernel_ends_up_as_with_ip_batch(pair: tuple[str, str]) -> None:
    tools, ours = pair
    peers = [(f"10.83.0.{i + 2}", f"66:00:00:00:00:{i:02x}", f"172.16.1.{i}") for i in range(50)]
    ip_lines = [f"neigh replace {ip} lladdr {mac} dev {VXLAN} nud permanent" for ip, mac, _ in peers]
    ip_lines += ["route replace " + " ".join(r.ip_args()) + f" proto {PROTO}" for r in ROUTES]
    _sh("ip", "-n", tools, "-force", "-batch", "-", stdin="\n".join(ip_lines) + "\n")
    _sh("ip", "netns", "exec", tools, "bridge", "-force", "-batch", "-",
        stdin="\n".join(f"fdb replace {mac} dev {VXLAN} dst {dst} self permanent" for _, mac, dst in peers) + "\n")

    def write() -> list[str]:
        batch = netlink.Batch()
        for ip, mac, dst in peers:
            batch.neigh_replace(ip, mac, VXLAN)
            batch.fdb_replace(mac, dst, VXLAN)
        for route in ROUTES:
            batch.route_replace(route, PROTO)
        return batch.commit()

    assert _in(ours, write) == []
    assert _state(ours) == _state(tools)
    assert len(_state(ours)[0]) == len(ROUTES) and len(_state(ours)[2]) == len(peers)

    # deletes: the same again with the tools' delete lines
    _sh("ip", "-n", tools, "-force", "-batch", "-", stdin="route del 10.64.0.0/26 proto 80\n"
        "route del blackhole 10.65.0.0/26 proto 80\nneigh del 10.83.0.2 dev vxlan.calico\n")
    _sh("ip", "netns", "exec", tools, "bridge", "fdb", "del", "66:00:00:00:00:00", "dev", VXLAN, "dst", "172.16.1.0",
        "self")

    def delete() -> list[str]:
        batch = netlink.Batch()
        batch.route_delete("10.64.0.0/26", PROTO)
        batch.route_delete("10.65.0.0/26", PROTO, blackhole=True)
        batch.neigh_delete("10.83.0.2", VXLAN)
        batch.fdb_delete("66:00:00:00:00:00", "172.16.1.0", VXLAN)
        batch.route_delete("10.99.0.0/26", PROTO)  # already gone: the goal is reached, no error
        return batch.commit()

    assert _in(ours, delete) == []
    assert _state(ours) == _state(tools)


def test_a_refused_request_is_named_and_the_rest_still_go_in(pair: tuple[str, str]) -> None:
    _, ours = pair

    def write() -> list[str]:
        batch = netlink.Batch()
        batch.route_replace(Route("10.70.0.0/26", via="10.83.0.2", dev=VXLAN, onlink=True), PROTO)
        batch.route_replace(Route("10.70.1.0/26", via="192.0.2.1"), PROTO)  # no route to the gateway
        batch.route_replace(Route("10.70.2.0/26", via="10.83.0.3", dev="nosuchdev", onlink=True), PROTO)
        batch.route_replace(Route("10.70.3.0/26", via="10.83.0.4", dev=VXLAN, onlink=True), PROTO)
        return batch.commit()

    errors = _in(ours, write)
    assert len(errors) == 2
    assert errors[0].startswith("route replace 10.70.2.0/26 via 10.83.0.3 dev nosuchdev onlink proto 80: Cannot find")
    assert errors[1].startswith("route replace 10.70.1.0/26 via 192.0.2.1 proto 80: ")
    assert "unreachable" in errors[1].lower()
    dsts = {r["dst"] for r in _state(ours)[0]}
    assert dsts == {"10.70.0.0/26", "10.70.3.0/26"}


def test_refusals_at_the_end_of_a_send_are_reported_once(pair: tuple[str, str]) -> None:
    """Only the last request of a ``send()`` asks for an acknowledgement: a refusal of that one
    (which is also its answer), of one just before it, and of the very last request of the batch
    are each reported once, and the requests between them go in."""
    _, ours = pair
    bad = {netlink.CHUNK - 2, netlink.CHUNK - 1, netlink.CHUNK + 40}

    def write() -> list[str]:
        batch = netlink.Batch()
        for i in range(netlink.CHUNK + 41):
            dst = f"10.71.{i // 4}.{(i % 4) * 64}/26"
            # the kernel refuses a gateway it has no route to (a missing device is refused before sending)
            batch.route_replace(Route(dst, via="192.0.2.1") if i in bad else
                                Route(dst, via="10.83.0.2", dev=VXLAN, onlink=True), PROTO)
        return batch.commit()

    errors = _in(ours, write)
    assert [e.split()[2] for e in errors] == [f"10.71.{i // 4}.{(i % 4) * 64}/26" for i in sorted(bad)]
    assert all("unreachable" in e.lower() for e in errors), errors
    dsts = {str(r["dst"]) for r in _state(ours)[0] if str(r["dst"]).startswith("10.71.")}
    assert len(dsts) == netlink.CHUNK + 41 - len(bad)
