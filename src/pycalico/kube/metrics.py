"""Prometheus metrics and the health endpoints of pycalico-kube-controllers, on one port
(Calico's kube-controllers serves its metrics on 9094)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.allocations_in_use = Gauge("ipam_allocations_in_use", "IP addresses allocated, per node", ["node"],
                                        registry=r)
        self.blocks = Gauge("ipam_blocks", "IPAM blocks, per affine node ('' for none)", ["node"], registry=r)
        self.gc_candidates = Gauge("ipam_allocations_gc_candidates",
                                   "Allocations whose pod is gone, waiting out the grace period", registry=r)
        self.gc_reclamations = Counter("ipam_allocations_gc_reclamations",
                                       "Leaked allocations released by the IPAM garbage collector", ["node"],
                                       registry=r)
        self.is_leader = Gauge("kube_controllers_is_leader", "1 while this instance is the active one", registry=r)
        self.reconciles = Counter("kube_controllers_reconciles", "Full reconciles run", ["controller"], registry=r)
        self.relists = Gauge("kube_controllers_informer_lists", "Full lists done by an informer", ["kind"],
                             registry=r)
        self._nodes_seen: set[str] = set()
        self._block_nodes_seen: set[str] = set()

    def set_ipam(self, in_use: dict[str, int], blocks: dict[str, int], candidates: int) -> None:
        for node in self._nodes_seen - in_use.keys():
            self.allocations_in_use.labels(node=node).set(0)
        for node in self._block_nodes_seen - blocks.keys():
            self.blocks.labels(node=node).set(0)
        for node, count in in_use.items():
            self.allocations_in_use.labels(node=node).set(count)
        for node, count in blocks.items():
            self.blocks.labels(node=node).set(count)
        self._nodes_seen |= in_use.keys()
        self._block_nodes_seen |= blocks.keys()
        self.gc_candidates.set(candidates)


class StatusServer:
    """``/metrics``, ``/liveness`` (the process works) and ``/readiness`` (active and in sync,
    or a healthy standby)."""

    def __init__(self, metrics: Metrics, host: str, port: int, *, live: Callable[[], bool],
                 ready: Callable[[], bool]) -> None:
        status = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                if path == "/metrics":
                    body, code, ctype = generate_latest(metrics.registry), 200, CONTENT_TYPE_LATEST
                elif path in ("/liveness", "/readiness", "/healthz"):
                    ok = status.live() if path == "/liveness" else status.ready()
                    body, code, ctype = (b"ok\n" if ok else b"not ready\n"), (200 if ok else 503), "text/plain"
                else:
                    body, code, ctype = b"not found\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.live, self.ready = live, ready
        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="status", daemon=True)

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
