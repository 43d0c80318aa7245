"""Health endpoints (Felix's /liveness and /readiness), Prometheus metrics, sd_notify."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)


class Health:
    """Named reporters; each says live/ready. 200 when all good, 503 otherwise."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: dict[str, dict[str, object]] = {}

    def report(self, name: str, *, live: bool = True, ready: bool = True, detail: str = "") -> None:
        with self._lock:
            self._reports[name] = {"live": live, "ready": ready, "detail": detail}

    def status(self, which: str) -> tuple[bool, dict[str, dict[str, object]]]:
        with self._lock:
            reports = {k: dict(v) for k, v in self._reports.items()}
        return all(bool(r[which]) for r in reports.values()), reports

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?")[0]
                if path not in ("/liveness", "/readiness"):
                    self.send_error(404)
                    return
                ok, reports = health.status("live" if path == "/liveness" else "ready")
                body = json.dumps(reports, sort_keys=True).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
        return server


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.resync_seconds = Histogram("pycalico_agent_resync_seconds", "Time to compute and apply the dataplane",
                                        registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.routes_programmed = Gauge("pycalico_agent_routes_programmed", "Routes the agent owns", registry=r)
        self.route_changes = Counter("pycalico_agent_route_changes_total", "Routes added or removed", registry=r)
        self.etcd_errors = Counter("pycalico_agent_etcd_errors_total", "Datastore errors", registry=r)
        self.dataplane_errors = Counter("pycalico_agent_dataplane_errors_total", "Failed kernel changes", registry=r)
        self.cni_requests = Counter("pycalico_agent_cni_requests_total", "CNI requests served", ["verb", "result"],
                                    registry=r)
        self.last_resync = Gauge("pycalico_agent_last_resync_timestamp_seconds", "Last full apply", registry=r)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)


def sd_notify(message: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)
        return False


def start_watchdog(alive: Callable[[], bool], stop: threading.Event) -> threading.Thread | None:
    """Pings systemd's watchdog at half its interval while ``alive()`` holds."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not os.environ.get("NOTIFY_SOCKET"):
        return None
    interval = max(int(usec) / 2e6, 0.5)

    def run() -> None:
        while not stop.wait(interval):
            if alive():
                sd_notify("WATCHDOG=1")

    thread = threading.Thread(target=run, name="watchdog", daemon=True)
    thread.start()
    return thread


def status_json(started: float, first_update: bool) -> str:
    now = time.time()
    return json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                       "uptime": round(now - started, 3), "first_update": first_update})
