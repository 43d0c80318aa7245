"""Real traffic between namespaces for policy tests: servers, probes, live flows, streams.

Everything runs in threads of the test process. A thread enters a namespace with
``in_netns`` only to make its socket and talk through it (a socket stays in the namespace it
was made in), so a table of 40 cases needs no subprocess. IPv4 only, as the topologies are.

- ``Servers``: TCP and UDP echo on chosen ports in chosen namespaces, one selector thread.
- ``attempt``/``probe``: one TCP, UDP or ICMP exchange. Success means our token (or the ICMP
  reply) came back; a failure waits the whole deadline unless the network said no first
  (a TCP RST, an ICMP error), and ``Outcome.reason`` tells which.
- ``attempt_many``/``probe_many``/``assert_reachability``: many of those at once.
- ``Connection``: a flow opened once and kept, to ``exchange()`` on later (conntrack's shortcut).
- ``UdpStream``/``IcmpStream``: numbered packets at a fixed rate with kernel arrival times, for
  "0 packets got through between t1 and t2" (times are ``time.monotonic()``).

Sources and destinations are namespace names and addresses, or anything with ``ns`` and
``ip`` attributes (``topology.Pod``, ``topology.Host``: a prefix on ``ip`` is ignored).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from pycalico.errors import ValidationError
from tests.support.topology import in_netns

DEFAULT_TIMEOUT = 0.6
# Opening a kept Connection must succeed: a longer deadline costs nothing then, and a loaded
# machine (a first SYN waiting for its neighbour entry) does not fail the test that opens it.
OPEN_TIMEOUT = 3.0
PROTOCOLS = ("tcp", "udp", "icmp")
TOKEN_LEN = 16

OK = "ok"
TIMEOUT = "timeout"  # nothing came back before the deadline: the packets were dropped
REFUSED = "refused"  # a TCP RST or ICMP port unreachable: the packet reached a host with no server
UNREACHABLE = "unreachable"  # an ICMP error (host/net/admin unreachable, time exceeded)
WRONG_REPLY = "wrong-reply"  # something came back, but not what was sent

# ICMP request types the Linux kernel answers, and the reply type it sends
ICMP_REPLIES = {8: 0, 13: 14}
_ICMP_ERRORS = (3, 11, 12)
_SO_TIMESTAMPNS = 35  # asm-generic value (x86, arm); Python 3.11 does not export it
_ENDPOINT_HELP = "a namespace name, a (namespace, address) pair, or an object with ns and ip"


class InNetns(Protocol):
    ns: str


class Endpoint(Protocol):
    ns: str
    ip: str


Source = str | InNetns
Destination = str | Endpoint


def _ns_of(src: Source) -> str:
    return src if isinstance(src, str) else src.ns


def _entered(ns: str) -> contextlib.AbstractContextManager[None]:
    if not os.path.exists(f"/run/netns/{ns}"):
        raise ValidationError("namespace", ns, "a named network namespace (under /run/netns)")
    return in_netns(ns)


def _ip_of(dst: Destination) -> str:
    return (dst if isinstance(dst, str) else dst.ip).split("/")[0]


def _endpoint(ep: Endpoint | tuple[str, str]) -> tuple[str, str]:
    if isinstance(ep, tuple):
        if len(ep) != 2:
            raise ValidationError("endpoint", ep, _ENDPOINT_HELP)
        return ep[0], ep[1].split("/")[0]
    if not hasattr(ep, "ns") or not hasattr(ep, "ip"):
        raise ValidationError("endpoint", ep, _ENDPOINT_HELP)
    return ep.ns, _ip_of(ep)


def _check_port(port: object, what: str = "port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValidationError(what, port, "an integer 0-65535 (0 only for an ephemeral port)")
    return port


_tokens = itertools.count(1)
_idents = itertools.count(os.getpid() & 0xFFFF)


def _token() -> bytes:
    return f"{next(_tokens):06d}-{os.urandom(4).hex()}"[:TOKEN_LEN].ljust(TOKEN_LEN, "x").encode()


def _ident() -> int:
    return next(_idents) & 0xFFFF


# ---------------------------------------------------------------- servers


@dataclass(frozen=True)
class Hit:
    """One TCP connection accepted or one UDP datagram answered by ``Servers``."""

    ns: str
    ip: str
    proto: str
    port: int
    peer: tuple[str, int]
    at: float  # time.monotonic()


class Servers:
    """TCP echo and UDP echo servers on ``tcp`` and ``udp`` ports of every endpoint.

    Each endpoint is bound on its own address, so several may share a namespace and a UDP
    reply leaves from the address the request went to. ``hits`` records who reached what
    (the peer address shows whether anything rewrote the source). More endpoints can be
    added while it runs (a pod made later in the test).
    """

    def __init__(self, endpoints: Iterable[Endpoint | tuple[str, str]], *, tcp: Iterable[int] = (),
                 udp: Iterable[int] = ()) -> None:
        self.tcp_ports = [_check_port(p, "tcp port") for p in tcp]
        self.udp_ports = [_check_port(p, "udp port") for p in udp]
        if not self.tcp_ports and not self.udp_ports:
            raise ValidationError("ports", [], "at least one tcp or udp port")
        self.hits: list[Hit] = []
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._pending: list[tuple[socket.socket, tuple[str, ...]]] = []
        self._owned: list[socket.socket] = []
        self._out: dict[socket.socket, bytearray] = {}
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake",))
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic-servers")
        self._thread.start()
        try:
            for ep in endpoints:
                self.add(ep)
        except BaseException:
            self.close()
            raise

    def add(self, endpoint: Endpoint | tuple[str, str]) -> None:
        ns, ip = _endpoint(endpoint)
        made: list[tuple[socket.socket, tuple[str, ...]]] = []
        try:
            with _entered(ns):
                for port in self.tcp_ports:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    made.append((s, ("accept", ns, ip, str(port))))
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((ip, port))
                    s.listen(128)
                for port in self.udp_ports:
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    made.append((s, ("udp", ns, ip, str(port))))
                    s.bind((ip, port))
        except BaseException as exc:
            for s, _ in made:
                s.close()
            if isinstance(exc, OSError) and made:
                kind, _, _, failed_port = made[-1][1]
                exc.add_note(f"Servers: binding {'tcp' if kind == 'accept' else 'udp'} {ip}:{failed_port} in {ns}")
            raise
        for s, _ in made:
            s.setblocking(False)
        with self._lock:
            self._pending.extend(made)
            self._owned.extend(s for s, _ in made)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        while not self._stop:
            with self._lock:
                pending, self._pending = self._pending, []
            for s, data in pending:
                self._sel.register(s, selectors.EVENT_READ, data)
            for key, events in self._sel.select(1.0):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                kind = key.data[0]
                try:
                    if kind == "wake":
                        sock.recv(4096)
                    elif kind == "accept":
                        self._accept(sock, key.data)
                    elif kind == "udp":
                        self._udp(sock, key.data)
                    else:
                        self._stream(sock, events)
                except (BlockingIOError, InterruptedError):
                    continue

    def _accept(self, listener: socket.socket, data: tuple[str, ...]) -> None:
        conn, peer = listener.accept()
        conn.setblocking(False)
        _, ns, ip, port = data
        self.hits.append(Hit(ns, ip, "tcp", int(port), peer, time.monotonic()))
        self._out[conn] = bytearray()
        self._sel.register(conn, selectors.EVENT_READ, ("conn",))

    def _udp(self, sock: socket.socket, data: tuple[str, ...]) -> None:
        for _ in range(64):
            try:
                payload, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued on the socket
                continue
            _, ns, ip, port = data
            self.hits.append(Hit(ns, ip, "udp", int(port), peer, time.monotonic()))
            with contextlib.suppress(OSError):
                sock.sendto(payload, peer)

    def _stream(self, conn: socket.socket, events: int) -> None:
        out = self._out[conn]
        try:
            if events & selectors.EVENT_READ:
                chunk = conn.recv(65536)
                if not chunk:
                    raise ConnectionResetError
                out += chunk
            if out:
                del out[:conn.send(out)]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(conn)
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
        self._sel.modify(conn, want, ("conn",))

    def _drop(self, conn: socket.socket) -> None:
        self._out.pop(conn, None)
        with contextlib.suppress(Exception):
            self._sel.unregister(conn)
        conn.close()

    def hits_for(self, ip: str, proto: str | None = None, port: int | None = None) -> list[Hit]:
        return [h for h in list(self.hits)
                if h.ip == ip and (proto is None or h.proto == proto) and (port is None or h.port == port)]

    def close(self) -> None:
        self._stop = True
        self._wake()
        self._thread.join(5)
        for conn in list(self._out):
            self._drop(conn)
        with self._lock:
            owned, self._owned, self._pending = self._owned, [], []
        for s in owned:
            s.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- single probes


@dataclass(frozen=True)
class Outcome:
    ok: bool
    reason: str  # OK, TIMEOUT, REFUSED, UNREACHABLE, WRONG_REPLY
    elapsed: float

    def __bool__(self) -> bool:
        return self.ok

    @property
    def dropped(self) -> bool:
        """Nothing at all came back: what a policy Deny (a DROP) looks like from the sender."""
        return self.reason == TIMEOUT


@dataclass(frozen=True)
class Case:
    """One probe of a table; ``label`` only names it in reports."""

    src: Source
    dst: Destination
    proto: str
    port: int | None = None
    timeout: float | None = None
    icmp_type: int = 8
    icmp_code: int = 0
    src_port: int = 0
    label: str = ""

    def describe(self) -> str:
        what = f"{self.proto}/{self.port}" if self.proto != "icmp" else f"icmp type {self.icmp_type}/{self.icmp_code}"
        text = f"{_ns_of(self.src)} -> {_ip_of(self.dst)} {what}"
        return f"{self.label}: {text}" if self.label else text


def _validate(proto: str, port: int | None, timeout: float, icmp_type: int, icmp_code: int, src_port: int) -> None:
    if proto not in PROTOCOLS:
        raise ValidationError("proto", proto, ", ".join(PROTOCOLS))
    if proto == "icmp":
        if port is not None:
            raise ValidationError("port", port, "None for icmp (ICMP has no ports)")
        if icmp_type not in ICMP_REPLIES:
            raise ValidationError("icmp_type", icmp_type,
                                  f"a request type the kernel answers: {sorted(ICMP_REPLIES)} (echo, timestamp)")
        if isinstance(icmp_code, bool) or not isinstance(icmp_code, int) or not 0 <= icmp_code <= 255:
            raise ValidationError("icmp_code", icmp_code, "an integer 0-255")
    elif port is None or _check_port(port) == 0:
        raise ValidationError("port", port, f"an integer 1-65535 for {proto}")
    _check_port(src_port, "src_port")
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ValidationError("timeout", timeout, "a number of seconds > 0")


def attempt(src: Source, dst: Destination, proto: str, port: int | None = None, *, timeout: float | None = None,
            icmp_type: int = 8, icmp_code: int = 0, src_port: int = 0) -> Outcome:
    """One exchange from namespace ``src`` to address ``dst``; see the module docstring."""
    deadline_s = DEFAULT_TIMEOUT if timeout is None else timeout
    _validate(proto, port, deadline_s, icmp_type, icmp_code, src_port)
    ns, ip = _ns_of(src), _ip_of(dst)
    start = time.monotonic()
    deadline = start + deadline_s
    with _entered(ns):
        if proto == "tcp":
            assert port is not None
            reason = _tcp(ip, port, deadline, src_port)
        elif proto == "udp":
            assert port is not None
            reason = _udp(ip, port, deadline, src_port)
        else:
            reason = _icmp(ip, icmp_type, icmp_code, deadline)
    return Outcome(reason == OK, reason, time.monotonic() - start)


def probe(src: Source, dst: Destination, proto: str, port: int | None = None, *, timeout: float | None = None,
          icmp_type: int = 8, icmp_code: int = 0, src_port: int = 0) -> bool:
    """True when the exchange came back; a probe that fails waits its whole ``timeout``."""
    return attempt(src, dst, proto, port, timeout=timeout, icmp_type=icmp_type, icmp_code=icmp_code,
                   src_port=src_port).ok


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def _error_reason(exc: OSError) -> str:
    if exc.errno == errno.ECONNREFUSED:
        return REFUSED
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM):
        return UNREACHABLE
    raise exc


def _bound(kind: socket.SocketKind, src_port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, kind)
    if src_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", src_port))
    return s


def _tcp(ip: str, port: int, deadline: float, src_port: int) -> str:
    with _bound(socket.SOCK_STREAM, src_port) as s:
        # closing with a RST leaves no TIME_WAIT behind (a fixed src_port can be probed again at once)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            s.settimeout(max(_remaining(deadline), 0.001))
            s.connect((ip, port))
            token = _token()
            s.sendall(token)
            got = b""
            while len(got) < TOKEN_LEN:
                s.settimeout(max(_remaining(deadline), 0.001))
                chunk = s.recv(TOKEN_LEN - len(got))
                if not chunk:
                    return WRONG_REPLY
                got += chunk
        except TimeoutError:
            return TIMEOUT
        except OSError as exc:
            return _error_reason(exc)
        return OK if got == token else WRONG_REPLY


def _udp(ip: str, port: int, deadline: float, src_port: int) -> str:
    resend = max((deadline - time.monotonic()) / 3, 0.05)
    with _bound(socket.SOCK_DGRAM, src_port) as s:
        s.connect((ip, port))
        token = _token()
        next_send = time.monotonic()
        wrong = False
        while True:
            now = time.monotonic()
            if now >= deadline:
                return WRONG_REPLY if wrong else TIMEOUT
            try:
                if now >= next_send:
                    s.send(token)
                    next_send = now + resend
                s.settimeout(max(min(deadline, next_send) - time.monotonic(), 0.001))
                if s.recv(65535) == token:
                    return OK
                wrong = True
            except TimeoutError:
                continue
            except OSError as exc:
                return _error_reason(exc)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmp_packet(icmp_type: int, icmp_code: int, ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", icmp_type, icmp_code, 0, ident, seq)
    csum = _checksum(header + payload)
    return struct.pack("!BBHHH", icmp_type, icmp_code, csum, ident, seq) + payload


def _icmp_payload(icmp_type: int, token: bytes) -> bytes:
    if icmp_type == 13:  # originate, receive, transmit timestamps (ms since midnight UTC)
        ms = int(time.time() * 1000) % 86_400_000
        return struct.pack("!III", ms, 0, 0)
    return token


@dataclass(frozen=True)
class _Icmp:
    src: str
    type: int
    code: int
    ident: int
    seq: int
    payload: bytes
    inner: tuple[str, int, int, int] | None  # for ICMP errors: (original dst, type, ident, seq)


def _parse_icmp(packet: bytes) -> _Icmp | None:
    if len(packet) < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    body = packet[ihl:]
    if len(body) < 8:
        return None
    icmp_type, code, _, ident, seq = struct.unpack("!BBHHH", body[:8])
    inner = None
    if icmp_type in _ICMP_ERRORS and len(body) >= 8 + 20:
        orig = body[8:]
        orig_ihl = (orig[0] & 0x0F) * 4
        if orig[9] == socket.IPPROTO_ICMP and len(orig) >= orig_ihl + 8:
            o_type, _, _, o_ident, o_seq = struct.unpack("!BBHHH", orig[orig_ihl:orig_ihl + 8])
            inner = (socket.inet_ntoa(orig[16:20]), o_type, o_ident, o_seq)
    return _Icmp(socket.inet_ntoa(packet[12:16]), icmp_type, code, ident, seq, body[8:], inner)


def _icmp(ip: str, icmp_type: int, icmp_code: int, deadline: float) -> str:
    ident, seq = _ident(), int.from_bytes(os.urandom(2), "big")
    want = ICMP_REPLIES[icmp_type]
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        try:
            s.sendto(_icmp_packet(icmp_type, icmp_code, ident, seq, _icmp_payload(icmp_type, _token())), (ip, 0))
        except OSError as exc:
            return _error_reason(exc)
        while True:
            left = _remaining(deadline)
            if left <= 0:
                return TIMEOUT
            s.settimeout(left)
            try:
                reply = _parse_icmp(s.recv(65535))
            except TimeoutError:
                return TIMEOUT
            if reply is None:
                continue
            if reply.src == ip and reply.type == want and reply.ident == ident and reply.seq == seq:
                return OK
            if reply.inner == (ip, icmp_type, ident, seq):
                return UNREACHABLE


# ---------------------------------------------------------------- many probes


CaseLike = Case | tuple[Source, Destination, str] | tuple[Source, Destination, str, int | None]


def _case(c: CaseLike) -> Case:
    if isinstance(c, Case):
        return c
    if isinstance(c, tuple) and len(c) in (3, 4):
        return Case(*c)
    raise ValidationError("case", c, "a Case or a (src, dst, proto[, port]) tuple")


def _run(c: Case) -> Outcome:
    return attempt(c.src, c.dst, c.proto, c.port, timeout=c.timeout, icmp_type=c.icmp_type, icmp_code=c.icmp_code,
                   src_port=c.src_port)


def attempt_many(cases: Sequence[CaseLike], *, parallel: int = 64) -> list[Outcome]:
    """Every case at once (up to ``parallel`` threads, each in its case's namespace), in order."""
    table = [_case(c) for c in cases]
    for c in table:  # refuse a bad row before any traffic
        _validate(c.proto, c.port, DEFAULT_TIMEOUT if c.timeout is None else c.timeout, c.icmp_type, c.icmp_code,
                  c.src_port)
    if not table:
        return []
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ValidationError("parallel", parallel, "an integer >= 1")
    with ThreadPoolExecutor(max_workers=min(parallel, len(table)), thread_name_prefix="probe") as pool:
        return list(pool.map(_run, table))


def probe_many(cases: Sequence[CaseLike], *, parallel: int = 64) -> list[bool]:
    return [o.ok for o in attempt_many(cases, parallel=parallel)]


def assert_reachability(expected: Sequence[tuple[CaseLike, bool]], *, parallel: int = 64,
                        drop_means_timeout: bool = True) -> list[Outcome]:
    """Run a truth table; raise one AssertionError listing every row that differs.

    With ``drop_means_timeout`` a row expected to fail must fail by silence (a policy Deny
    drops); a RST or an ICMP error counts as a mismatch, since it proves the packet got through.
    """
    cases = [_case(c) for c, _ in expected]
    outcomes = attempt_many(cases, parallel=parallel)
    wrong = []
    for case, (_, want), got in zip(cases, expected, outcomes, strict=True):
        good = got.ok if want else (got.dropped if drop_means_timeout else not got.ok)
        if not good:
            wrong.append(f"  {case.describe()}: expected {'pass' if want else 'drop'}, "
                         f"got {got.reason} after {got.elapsed:.2f}s")
    if wrong:
        raise AssertionError(f"{len(wrong)} of {len(cases)} cases differ:\n" + "\n".join(wrong))
    return outcomes


# ---------------------------------------------------------------- a kept flow


class Connection:
    """A TCP (or UDP) flow from ``src`` to ``dst:port`` that stays open between exchanges.

    Opening it does a first exchange (within ``open_timeout``) and raises ``ConnectionError``
    if that fails. A later
    ``exchange()`` sends a new token on the same 5-tuple and waits for its echo; echoes of
    earlier tokens that come late (after a failed exchange) are skipped. Not for use by
    several threads at once.
    """

    def __init__(self, src: Source, dst: Destination, port: int, proto: str = "tcp", *,
                 timeout: float = DEFAULT_TIMEOUT, src_port: int = 0, open_timeout: float = OPEN_TIMEOUT) -> None:
        if proto not in ("tcp", "udp"):
            raise ValidationError("proto", proto, "tcp, udp")
        _validate(proto, port, timeout, 8, 0, src_port)
        _validate(proto, port, open_timeout, 8, 0, src_port)
        self.proto, self.ns, self.ip, self.port, self.timeout = proto, _ns_of(src), _ip_of(dst), port, timeout
        self._buf = b""
        with _entered(self.ns):
            self.sock = _bound(socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM, src_port)
        try:
            self.sock.settimeout(open_timeout)
            self.sock.connect((self.ip, port))
            if not self.exchange(timeout=open_timeout):
                raise ConnectionError(f"{proto} {self.ns} -> {self.ip}:{port}: first exchange got no echo")
        except OSError as exc:
            self.sock.close()
            if isinstance(exc, ConnectionError):
                raise
            raise ConnectionError(f"{proto} {self.ns} -> {self.ip}:{port}: {exc}") from exc

    @property
    def local(self) -> tuple[str, int]:
        addr: tuple[str, int] = self.sock.getsockname()
        return addr

    def exchange(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        token = _token()
        try:
            if self.proto == "udp":
                self.sock.send(token)
            else:
                self.sock.sendall(token)
            while True:
                if self.proto == "tcp":  # the stream echoes every token in order, all TOKEN_LEN long
                    while len(self._buf) >= TOKEN_LEN:
                        got, self._buf = self._buf[:TOKEN_LEN], self._buf[TOKEN_LEN:]
                        if got == token:
                            return True
                left = _remaining(deadline)
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                chunk = self.sock.recv(65535)
                if self.proto == "udp":
                    if chunk == token:
                        return True
                elif not chunk:
                    return False
                else:
                    self._buf += chunk
        except TimeoutError:
            return False
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- continuous streams


def _kernel_time(ancdata: list[tuple[int, int, bytes]]) -> float:
    """The arrival time the kernel stamped on a packet, as time.monotonic(); now if absent."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            mono, real = time.monotonic(), time.time()
            return mono - (real - (sec + nsec / 1e9))
    return time.monotonic()


@dataclass
class _Record:
    sent: dict[int, float] = field(default_factory=dict)  # seq -> monotonic time just before sending
    arrived: dict[int, float] = field(default_factory=dict)  # seq -> kernel arrival time (monotonic)


class _Stream:
    """Numbered packets at ``rate`` per second; what arrived and when. Times are time.monotonic()."""

    def __init__(self, rate: float) -> None:
        if not isinstance(rate, int | float) or not 1 <= rate <= 5000:
            raise ValidationError("rate", rate, "packets per second, 1-5000")
        self.interval = 1.0 / rate
        self.magic = os.urandom(8)
        self._rec = _Record()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []

    # subclasses: _send(seq) and _receive() -> (seq, arrival) | None
    def _send(self, seq: int) -> None:
        raise NotImplementedError

    def _receive(self) -> tuple[int, float] | None:
        raise NotImplementedError

    def _start(self, name: str) -> None:
        for target in (self._sender, self._receiver):
            t = threading.Thread(target=target, daemon=True, name=f"{name}-{target.__name__.strip('_')}")
            self._threads.append(t)
            t.start()

    def _sender(self) -> None:
        next_at = time.monotonic()
        for seq in itertools.count():
            if self._stop.wait(max(next_at - time.monotonic(), 0)):
                return
            with self._lock:
                self._rec.sent[seq] = time.monotonic()
            with contextlib.suppress(OSError):  # a send refused by the local stack is a lost packet
                self._send(seq)
            next_at = max(next_at + self.interval, time.monotonic() - self.interval)

    def _receiver(self) -> None:
        while not self._stop.is_set():
            try:
                got = self._receive()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if got is not None:
                with self._lock:
                    self._rec.arrived.setdefault(*got)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for s in self._socks:
            s.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what happened

    def snapshot(self) -> tuple[dict[int, float], dict[int, float]]:
        """(sent, arrived): sequence number -> time, copies."""
        with self._lock:
            return dict(self._rec.sent), dict(self._rec.arrived)

    def sent_between(self, t1: float, t2: float) -> list[int]:
        return sorted(s for s, t in self.snapshot()[0].items() if t1 <= t <= t2)

    def arrived_between(self, t1: float, t2: float) -> list[int]:
        """Sequence numbers that arrived (kernel receive time) in [t1, t2]."""
        return sorted(s for s, t in self.snapshot()[1].items() if t1 <= t <= t2)

    def delivered_of_sent_between(self, t1: float, t2: float) -> list[int]:
        """Of the packets sent in [t1, t2], those that arrived at any time."""
        sent, arrived = self.snapshot()
        return sorted(s for s, t in sent.items() if t1 <= t <= t2 and s in arrived)

    def first_arrival_after(self, t: float) -> float | None:
        times = [a for a in self.snapshot()[1].values() if a >= t]
        return min(times) if times else None

    def wait_for_arrival_after(self, t: float, timeout: float) -> float:
        """Poll until a packet arrives at or after ``t``; its arrival time."""
        deadline = time.monotonic() + timeout
        while (found := self.first_arrival_after(t)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no packet arrived after t={t:.3f} within {timeout}s "
                                     f"(sent {len(self.snapshot()[0])}, arrived {len(self.snapshot()[1])})")
            time.sleep(self.interval)
        return found

    def wait_for_arrivals(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.snapshot()[1]) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} packets arrived within {timeout}s "
                                     f"(sent {len(self.snapshot()[0])}, arrived {len(self.snapshot()[1])})")
            time.sleep(self.interval)

    def gaps(self, min_gap: float) -> list[tuple[float, float]]:
        """Intervals longer than ``min_gap`` between consecutive arrivals."""
        times = sorted(self.snapshot()[1].values())
        return [(a, b) for a, b in itertools.pairwise(times) if b - a > min_gap]


class UdpStream(_Stream):
    """UDP datagrams from ``src`` to a receiver of its own on ``dst``'s address and ``port``.

    The 5-tuple stays the same for the whole stream (one sender socket), so conntrack sees
    one flow, as a long-lived client would. ``port=0`` picks a free one (see ``self.port``).
    """

    def __init__(self, src: Source, dst: Endpoint | tuple[str, str], port: int = 0, *, rate: float = 200.0) -> None:
        super().__init__(rate)
        dst_ns, self.ip = _endpoint(dst)
        with _entered(dst_ns):
            self._rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socks.append(self._rx)
        try:
            self._rx.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            self._rx.bind((self.ip, _check_port(port)))
            self._rx.settimeout(0.05)
            self.port: int = self._rx.getsockname()[1]
            with _entered(_ns_of(src)):
                self._tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._socks.append(self._tx)
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> UdpStream:
        self._start("udp-stream")
        return self

    def _send(self, seq: int) -> None:
        self._tx.sendto(self.magic + struct.pack("!Q", seq), (self.ip, self.port))

    def _receive(self) -> tuple[int, float] | None:
        data, anc, _, _ = self._rx.recvmsg(64, socket.CMSG_SPACE(16))
        if len(data) != 16 or data[:8] != self.magic:
            return None
        return struct.unpack("!Q", data[8:])[0], _kernel_time(anc)


class IcmpStream(_Stream):
    """Echo requests from ``src`` to ``dst``; "arrived" is the reply's arrival back at ``src``
    (so a gap means either direction was cut)."""

    def __init__(self, src: Source, dst: Destination, *, rate: float = 200.0) -> None:
        super().__init__(rate)
        self.ip = _ip_of(dst)
        self.ident = _ident()
        with _entered(_ns_of(src)):
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self._socks.append(self._sock)
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._sock.settimeout(0.05)

    def __enter__(self) -> IcmpStream:
        self._start("icmp-stream")
        return self

    def _send(self, seq: int) -> None:
        packet = _icmp_packet(8, 0, self.ident, seq & 0xFFFF, self.magic + struct.pack("!Q", seq))
        self._sock.sendto(packet, (self.ip, 0))

    def _receive(self) -> tuple[int, float] | None:
        data, anc, _, _ = self._sock.recvmsg(65535, socket.CMSG_SPACE(16))
        reply = _parse_icmp(data)
        if (reply is None or reply.type != 0 or reply.ident != self.ident or reply.src != self.ip
                or reply.payload[:8] != self.magic or len(reply.payload) < 16):
            return None
        return struct.unpack("!Q", reply.payload[8:16])[0], _kernel_time(anc)

