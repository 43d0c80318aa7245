"""A real TCP proxy between a client and one etcd member that loses replies on demand.

The fault it causes: a request is forwarded to etcd whole, etcd applies it and answers,
and the answer never reaches the client — the connection is closed under it
(``mode="close"``: the client sees EOF or a reset after sending) or the answer is held
back past the client's timeout (``mode="delay"``). This is what a member crash, a
partition or a load balancer's idle reset does to a request in flight; a real one
cannot be had on demand here (killing etcd at the exact moment between applying a
request and writing its answer is not schedulable), so this proxy makes it.

Everything passes through as bytes, TLS included: the proxy never decrypts. It finds
requests and replies by the TLS record type in the clear 5-byte record headers: a
run of client records of type 23 (application data) is one request, the server's
type-23 records after it are its reply. TLS 1.3 also carries its last handshake
messages and session tickets in type-23 records, so clients under test are pinned to
TLS 1.2 (``pin_tls12``), where type 23 is only application data. What the client
sees on a lost reply does not depend on the version.

While a reply is being lost, the connection to etcd stays open and is drained, so
etcd finishes the request (a closed upstream could cancel it): the write is applied.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pycalico.datastore.etcd import EtcdClient, TlsConfig, replay_safe

APPLICATION_DATA = 23


def pin_tls12(client: EtcdClient) -> EtcdClient:
    """Make ``client`` speak TLS 1.2, so that the proxy can tell requests from replies."""
    ctx = client._ssl_context  # noqa: SLF001 - a test knob on the client's own context
    assert ctx is not None, "pin_tls12 is for TLS clients"
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return client


class LosingClient(EtcdClient):
    """A real client through ``proxy`` (first endpoint; ``also`` after it), pinned to TLS
    1.2; ``lose_write(n)`` has the proxy lose the reply to the n-th write request from
    now (a write: anything ``replay_safe`` is not). The loss itself happens on the wire."""

    def __init__(self, proxy: FaultProxy, tls: TlsConfig, *also: str, timeout: float = 1.0) -> None:
        super().__init__([proxy.url, *also], tls, timeout=timeout, connect_timeout=1.0)
        pin_tls12(self)
        self.proxy = proxy
        self._countdown = 0
        self._mode = "close"
        self.writes = 0

    def lose_write(self, n: int = 1, mode: str = "close") -> None:
        self._countdown, self._mode = n, mode

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if not replay_safe(path, body):
            self.writes += 1
            if self._countdown:
                self._countdown -= 1
                if self._countdown == 0:
                    self.proxy.lose_replies(1, mode=self._mode, delay=self.timeout + 1.5)
        return super().call(path, body)


class _Records:
    """Finds where TLS records start in a byte stream fed in arbitrary chunks."""

    def __init__(self) -> None:
        self._left = 0  # bytes of the current record's body still to come
        self._header = b""

    def feed(self, data: bytes) -> Iterator[tuple[int, int]]:
        """(offset in ``data``, record type) for every record that starts in ``data``."""
        i = 0
        while i < len(data):
            if self._left:
                step = min(self._left, len(data) - i)
                self._left -= step
                i += step
                continue
            start = i - len(self._header)
            need = 5 - len(self._header)
            self._header += data[i:i + need]
            i += min(need, len(data) - i)
            if len(self._header) == 5:
                kind, length = self._header[0], int.from_bytes(self._header[3:5], "big")
                self._header = b""
                self._left = length
                yield max(start, 0), kind


@dataclass
class _Fault:
    mode: str  # "close" or "delay"
    delay: float = 0.0


@dataclass
class _Conn:
    client: socket.socket
    upstream: socket.socket
    fault: _Fault | None = None  # every request on this connection (scope "connection")
    phase: str = "idle"  # idle → request → reply → request ...
    losing: _Fault | None = None  # the reply now being lost
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False


class FaultProxy:
    """Listens on 127.0.0.1 (``url``) and forwards to the etcd at ``target_url``."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 2379)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"{parts.scheme}://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._per_request: list[_Fault] = []
        self._per_connection: list[_Fault] = []
        self._conns: list[_Conn] = []
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self.requests = 0
        self.replies_lost = 0
        self.connections = 0
        self._spawn(self._accept_loop)

    # ---- arming ------------------------------------------------------------------------

    def lose_replies(self, count: int = 1, *, mode: str = "close", delay: float = 0.0) -> None:
        """Lose the replies to the next ``count`` requests (on any connection)."""
        if mode not in ("close", "delay"):
            raise ValueError(f"mode: {mode!r}; allowed: close, delay")
        with self._lock:
            self._per_request += [_Fault(mode, delay) for _ in range(count)]

    def lose_next_connection(self, *, mode: str = "close", delay: float = 0.0) -> None:
        """Lose the reply to every request on the next connection accepted."""
        with self._lock:
            self._per_connection.append(_Fault(mode, delay))

    def disarm(self) -> None:
        with self._lock:
            self._per_request.clear()
            self._per_connection.clear()

    @property
    def armed(self) -> int:
        with self._lock:
            return len(self._per_request) + len(self._per_connection)

    def close_connections(self) -> None:
        """Close every client connection cleanly (FIN), as an etcd restart does to idle
        kept-alive connections."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            self._close(conn)

    # ---- plumbing ----------------------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                fault = self._per_connection.pop(0) if self._per_connection else None
                conn = _Conn(client, upstream, fault)
                self._conns.append(conn)
                self.connections += 1
            self._spawn(self._client_to_server, conn)
            self._spawn(self._server_to_client, conn)

    def _close(self, conn: _Conn, *, client_only: bool = False) -> None:
        socks = [conn.client] if client_only else [conn.client, conn.upstream]
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if not client_only:
            conn.closed = True
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)

    def _client_to_server(self, conn: _Conn) -> None:
        records = _Records()
        try:
            while True:
                data = conn.client.recv(65536)
                if not data:
                    break
                for _, kind in records.feed(data):
                    if kind != APPLICATION_DATA:
                        continue
                    with conn.lock:
                        if conn.phase == "request":
                            continue
                        conn.phase = "request"
                        with self._lock:
                            self.requests += 1
                            fault = conn.fault or (self._per_request.pop(0) if self._per_request else None)
                        conn.losing = fault
                conn.upstream.sendall(data)
        except OSError:
            pass
        with conn.lock:
            losing = conn.losing
        if losing is None:
            self._close(conn)
        # else: keep draining etcd's answer; the other pump closes when etcd is done

    def _server_to_client(self, conn: _Conn) -> None:
        records = _Records()
        try:
            while True:
                data = conn.upstream.recv(65536)
                if not data:
                    break
                cut = len(data)
                with conn.lock:
                    for offset, kind in records.feed(data):
                        if kind == APPLICATION_DATA and conn.phase == "request":
                            conn.phase = "reply"
                            if conn.losing is not None:
                                cut = min(cut, offset)
                    losing = conn.losing if conn.phase == "reply" else None
                if losing is None:
                    conn.client.sendall(data)
                    continue
                if cut:
                    conn.client.sendall(data[:cut])
                with self._lock:
                    self.replies_lost += 1
                if losing.mode == "close":
                    self._close(conn, client_only=True)
                    self._drain(conn)
                    self._close(conn)
                else:
                    self._spawn(self._deliver_late, conn, data[cut:], losing.delay)
                    self._drain(conn)
                return
        except OSError:
            pass
        self._close(conn)

    def _drain(self, conn: _Conn) -> None:
        """Read etcd's answer to the end (it must not see the request cancelled)."""
        conn.upstream.settimeout(2.0)
        try:
            while conn.upstream.recv(65536):
                pass
        except OSError:
            pass

    def _deliver_late(self, conn: _Conn, data: bytes, delay: float) -> None:
        time.sleep(delay)  # the fault itself: the reply arrives after the client gave up
        try:
            conn.client.sendall(data)
        except OSError:
            pass
        self._close(conn)

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()
        self.close_connections()
        for thread in self._threads:
            thread.join(3)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
