"""The CNI fast-path server: runs inside the agent, answers the launcher (design.md §5).

The agent calls::

    from pycalico.cni.server import start_server
    server = start_server(syncer=agent_syncer)   # /var/run/pycalico/cni.sock, 0600
    ...
    server.stop()

It keeps the etcd connections, the netlink sockets (one per worker thread) and the
plugin's modules imported, so an ADD costs the launcher's start plus the real work.
``python -m pycalico.cni.server --socket PATH`` runs one standalone (tests, bench).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from pycalico.cni.launcher import DEFAULT_SOCKET, decode_request, encode_reply
from pycalico.cni.plugin import Runtime, execute
from pycalico.datastore.syncer import Syncer

log = logging.getLogger("pycalico.cni.server")

MAX_REQUEST = 4 * 1024 * 1024
SWITCH_INTERVAL = 0.001


class CniServer:
    """A unix-socket server with a fixed pool of worker threads.

    Few workers on purpose: the work is mostly Python under one GIL, and with many
    threads each I/O wait ends in a queue for the GIL (measured, 8 callers on 2 cores:
    40 ADDs in ~830 ms with 1–2 workers, ~870 ms with 4, ~1030 ms with 8). Four keep a
    slow request (GC, an etcd timeout) from stalling the rest.

    Each worker keeps its own netlink handle (pyroute2 sockets are thread-affine);
    datastore clients are shared through the Runtime.
    """

    def __init__(self, socket_path: str = DEFAULT_SOCKET, *, workers: int = 4, mirror: bool = True,
                 syncer: Syncer | None = None) -> None:
        self.socket_path = socket_path
        self.workers = workers
        # mirror: the datastore reads of ADD (IPAM context, blocks, readiness) come from a
        # watch-fed cache (pycalico.cni.cache); writes stay compare-and-swap. ``syncer``: the
        # agent's, whose streams the cache shares for the agent's own etcd.
        self.runtime = Runtime(parallel=True, mirror=mirror, syncer=syncer)
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> CniServer:
        # Requests are short and I/O-bound: hand the GIL over quickly when a thread's
        # etcd or netlink answer is in (the default 5 ms interval convoys under load).
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        directory = os.path.dirname(self.socket_path)
        if directory:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            os.unlink(self.socket_path)  # a stale socket of a previous agent
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(self.socket_path)
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        sock.listen(128)
        self._sock = sock
        # Every worker blocks in accept() itself: the kernel wakes one per connection,
        # with no hand-off through another thread.
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"cni-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("CNI fast path listening on %s", self.socket_path)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        for t in self._threads:
            t.join(timeout=5)
        self.runtime.close()

    def __enter__(self) -> CniServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- serving -----------------------------------------------------------------------

    def _worker(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            try:
                self._serve(conn)
            except Exception:  # noqa: BLE001 - one bad client must not kill a worker
                log.exception("CNI request failed")
            finally:
                conn.close()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        chunks = []
        size = 0
        while True:
            data = conn.recv(65536)
            if not data:
                break
            size += len(data)
            if size > MAX_REQUEST:
                return
            chunks.append(data)
        try:
            role, env, stdin = decode_request(b"".join(chunks))
        except ValueError:
            log.warning("dropping a malformed fast-path request")
            return
        code, out = self.handle(role, env, stdin)
        conn.sendall(encode_reply(code, out))

    def handle(self, role: str, env: dict[str, str], stdin: bytes) -> tuple[int, str]:
        role = role if role in ("plugin", "ipam") else "plugin"
        env = {k: v for k, v in env.items() if k.startswith("CNI_")}
        return execute(role, env, stdin, self.runtime)


def start_server(socket_path: str | None = None, **kwargs: Any) -> CniServer:
    """Start serving the fast path on ``socket_path`` (default /var/run/pycalico/cni.sock,
    or $PYCALICO_CNI_SOCKET) in background threads; returns the server to ``stop()``."""
    path = socket_path or os.environ.get("PYCALICO_CNI_SOCKET") or DEFAULT_SOCKET
    return CniServer(path, **kwargs).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="pycalico CNI fast-path server (normally run by the agent)")
    parser.add_argument("--socket", default=os.environ.get("PYCALICO_CNI_SOCKET") or DEFAULT_SOCKET)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--ready-file", default="", help="touch this file once listening")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    # The dataplane module is imported now, not on the first request.
    import pycalico.cni.dataplane  # noqa: F401

    server = start_server(args.socket, workers=args.workers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(str(os.getpid()))
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
