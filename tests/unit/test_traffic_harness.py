"""The traffic harness of the policy tests (tests/support/traffic.py) on a real namespace topology.

One host namespace with two pods and an outside namespace; iptables DROP rules in the host's
FORWARD chain stand for a policy Deny. No etcd, no agent: this proves the harness, not policy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pycalico.errors import ValidationError
from tests.support import traffic
from tests.support.topology import Host, Pod, Topology, nsexec, sh
from tests.support.traffic import Case, Connection, IcmpStream, Servers, UdpStream, attempt, probe, probe_many

pytestmark = pytest.mark.netns

TCP_PORTS = [80, 81, 8080]
UDP_PORTS = [53, 54]
DEADLINE = traffic.DEFAULT_TIMEOUT
SLACK = 0.5  # a loaded 2-core machine may wake a thread late; never early


@dataclass
class Lab:
    topo: Topology
    host: Host
    a: Pod
    b: Pod
    servers: Servers

    def drop(self, *match: str, append: bool = False) -> None:
        self.host.run("iptables", "-A" if append else "-I", "FORWARD", *match, "-j", "DROP")

    def undrop(self, *match: str) -> None:
        self.host.run("iptables", "-D", "FORWARD", *match, "-j", "DROP")


def _harness_threads() -> list[threading.Thread]:
    names = ("traffic-", "probe", "udp-stream", "icmp-stream")
    return [t for t in threading.enumerate() if t.name.startswith(names)]


@pytest.fixture
def lab(unique: str) -> Iterator[Lab]:
    assert not _harness_threads()
    topo = Topology(unique, [1], outside=True)
    with topo:
        host = topo.hosts[0]
        a = host.add_pod("a", "10.240.0.1")
        b = host.add_pod("b", "10.240.0.2")
        with Servers([a, b, host], tcp=TCP_PORTS, udp=UDP_PORTS) as servers:
            yield Lab(topo, host, a, b, servers)
    assert not _harness_threads()
    left = [ns for ns in sh("ip", "netns", "list").stdout.split() if ns.startswith(topo.prefix)]
    assert not left


def test_tcp_udp_and_icmp_probes_exchange_data_between_pods_and_from_outside(lab: Lab) -> None:
    a, b, host, outside = lab.a, lab.b, lab.host, lab.topo.outside
    for src, dst in ((a, b), (b, a), (a, host)):
        assert probe(src, dst, "tcp", 80)
        assert probe(src, dst, "udp", 53)
        assert probe(src, dst, "icmp")
    assert probe(a, b.ip, "icmp", icmp_type=13)  # a timestamp request answered by a timestamp reply
    # the outside namespace reaches the host (it has no route to the pods: an ICMP error says so at once)
    assert probe(outside, host, "tcp", 8080) and probe(outside, host, "udp", 54) and probe(outside, host, "icmp")
    assert attempt(outside, b, "tcp", 80).reason == traffic.UNREACHABLE

    # with a route on the router, the outside reaches pods and serves them, through the same API
    nsexec(lab.topo.router, "ip", "route", "add", "10.240.0.0/24", "via", host.addr)
    lab.servers.add((outside, lab.topo.outside_ip))
    assert probe(outside, b, "tcp", 80) and probe(b, lab.topo.outside_ip, "udp", 53)

    assert [h.peer[0] for h in lab.servers.hits_for(b.ip, "tcp", 80)] == [a.ip, lab.topo.outside_ip]
    assert lab.servers.hits_for(host.addr, "tcp", 8080)[0].peer[0] == lab.topo.outside_ip
    assert probe(a, b, "tcp", 81, src_port=40001) and probe(a, b, "tcp", 81, src_port=40001)
    assert [h.peer for h in lab.servers.hits_for(b.ip, "tcp", 81)] == [(a.ip, 40001)] * 2
    # no server on the port: refused at once, which is not what a dropped packet looks like
    for proto in ("tcp", "udp"):
        got = attempt(a, b, proto, 9999)
        assert got.reason == traffic.REFUSED and not got.dropped and got.elapsed < DEADLINE / 2

    # a pod added later is served too
    c = host.add_pod("c", "10.240.0.3")
    lab.servers.add(c)
    assert probe(a, c, "tcp", 81) and probe(a, c, "udp", 54)


def test_a_dropped_probe_fails_only_when_its_deadline_has_passed(lab: Lab) -> None:
    a, b = lab.a, lab.b
    lab.drop("-p", "tcp", "--dport", "81")
    lab.drop("-p", "udp", "--dport", "54")
    lab.drop("-p", "icmp", "--icmp-type", "13")
    for kwargs, deadline in (({"proto": "tcp", "port": 81}, DEADLINE), ({"proto": "udp", "port": 54}, DEADLINE),
                             ({"proto": "icmp", "icmp_type": 13}, DEADLINE),
                             ({"proto": "tcp", "port": 81, "timeout": 0.3}, 0.3)):
        got = attempt(a, b, **kwargs)  # type: ignore[arg-type]
        assert not got.ok and got.dropped, (kwargs, got)
        assert deadline <= got.elapsed < deadline + SLACK, (kwargs, got)
    # the rest still passes: the rules cut exactly what they match
    assert probe(a, b, "tcp", 80) and probe(a, b, "udp", 53) and probe(a, b, "icmp")

    lab.undrop("-p", "tcp", "--dport", "81")
    assert probe(a, b, "tcp", 81)


def test_a_kept_connection_survives_a_rule_for_new_connections_only(lab: Lab) -> None:
    """What Felix's conntrack shortcut does for a policy added on a live connection."""
    a, b = lab.a, lab.b
    shortcut = ("FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
    lab.host.run("iptables", "-I", *shortcut)  # in place before the flows start, as the agent's chains are
    with Connection(a, b, 80) as tcp, Connection(a, b, 53, "udp") as udp:
        opened = (tcp.local, udp.local)
        lab.drop("-p", "tcp", "--dport", "80", append=True)
        lab.drop("-p", "udp", "--dport", "53", append=True)
        assert tcp.exchange() and udp.exchange()
        assert not probe(a, b, "tcp", 80) and not probe(a, b, "udp", 53)
        with pytest.raises(ConnectionError, match=f"tcp {a.ns} -> {b.ip}:80"):
            Connection(a, b, 80, open_timeout=DEADLINE)

        # without the shortcut the flow is dropped too; once it passes again, late echoes are skipped
        lab.host.run("iptables", "-D", *shortcut)
        assert not tcp.exchange() and not udp.exchange()
        lab.undrop("-p", "tcp", "--dport", "80")
        lab.undrop("-p", "udp", "--dport", "53")
        assert tcp.exchange(timeout=3.0) and tcp.exchange() and udp.exchange()
        assert (tcp.local, udp.local) == opened  # the same flows as at the start


def test_probe_many_runs_a_forty_case_table_concurrently(lab: Lab) -> None:
    a, b, host, outside = lab.a, lab.b, lab.host, lab.topo.outside
    lab.drop("-p", "tcp", "--dport", "81")
    lab.drop("-p", "udp", "--dport", "54")
    lab.drop("-p", "icmp", "-d", b.ip, "-m", "conntrack", "--ctstate", "NEW")  # replies to b pass
    rows: list[tuple[Case, bool]] = []
    for src, dst in ((a, b), (b, a), (a, host), (outside, host)):
        through_forward = src is not outside and dst is not host
        rows += [(Case(src, dst, "tcp", 80), True), (Case(src, dst, "tcp", 8080), True),
                 (Case(src, dst, "tcp", 81), not through_forward), (Case(src, dst, "udp", 53), True),
                 (Case(src, dst, "udp", 54), not through_forward), (Case(src, dst, "icmp"), dst is not b),
                 (Case(src, dst, "icmp", icmp_type=13), dst is not b)]
    rows += [(Case(a, b, "tcp", 81, label=f"extra {i}"), False) for i in range(40 - len(rows))]
    assert len(rows) == 40
    expected = [want for _, want in rows]
    serial_floor = expected.count(False) * DEADLINE  # each failure alone waits its deadline

    start = time.monotonic()
    assert probe_many([case for case, _ in rows]) == expected
    elapsed = time.monotonic() - start
    assert elapsed < serial_floor / 4, (elapsed, serial_floor)

    traffic.assert_reachability(rows)
    with pytest.raises(AssertionError, match=r"1 of 2 cases differ:\n  wrong: .* tcp/80: expected drop, got ok"):
        traffic.assert_reachability([(Case(a, b, "tcp", 80, label="wrong"), False), (Case(a, b, "tcp", 8080), True)])
    assert probe_many([(a, b, "tcp", 80), (a, b.ip, "icmp")]) == [True, False]


def test_streams_show_a_gap_exactly_while_a_drop_rule_is_present(lab: Lab) -> None:
    a, b = lab.a, lab.b
    with UdpStream(a, b, 5000, rate=200) as udp, IcmpStream(b, a, rate=200) as icmp:
        for stream in (udp, icmp):
            stream.wait_for_arrivals(10, 3)
        rules = [("-p", "udp", "--dport", "5000"), ("-p", "icmp", "-d", a.ip)]
        t1 = time.monotonic()
        for rule in rules:
            lab.drop(*rule)
        t1_in = time.monotonic()
        time.sleep(0.4)  # the window being measured, not a synchronisation
        t2 = time.monotonic()
        for rule in rules:
            lab.undrop(*rule)
        t2_out = time.monotonic()
        for stream in (udp, icmp):
            resumed = stream.wait_for_arrival_after(t2, 3)
            assert resumed < t2_out + SLACK
            assert len(stream.sent_between(t1_in, t2)) > 20  # the sender kept going
            assert stream.arrived_between(t1_in, t2) == []
            assert stream.delivered_of_sent_between(t1_in, t2) == []
            (gap_start, gap_end), = [g for g in stream.gaps(0.2) if g[0] <= t1_in and g[1] >= t2]
            assert t1 - SLACK < gap_start <= t1_in and t2 <= gap_end == resumed
            assert stream.arrived_between(0, t1)
    assert udp.port == 5000


def test_bad_input_names_the_field(lab: Lab) -> None:
    for kwargs, field in (({"proto": "sctp", "port": 80}, "proto"), ({"proto": "tcp"}, "port"),
                          ({"proto": "udp", "port": 70000}, "port"), ({"proto": "icmp", "icmp_type": 3}, "icmp_type"),
                          ({"proto": "tcp", "port": 80, "timeout": 0}, "timeout")):
        with pytest.raises(ValidationError) as err:
            attempt(lab.a, lab.b, **kwargs)  # type: ignore[arg-type]
        assert err.value.field == field
    with pytest.raises(ValidationError, match="parallel"):
        probe_many([(lab.a, lab.b, "tcp", 80)], parallel=0)
    with pytest.raises(ValidationError, match="namespace: invalid value 'no-such-ns'"):
        probe("no-such-ns", lab.b, "icmp")
    with pytest.raises(ValidationError, match="rate"):
        UdpStream(lab.a, lab.b, rate=0)
