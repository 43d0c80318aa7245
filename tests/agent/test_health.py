"""Health endpoints, sd_notify and the watchdog, without a kernel or etcd."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest

from pycalico.agent import health


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body.startswith(b"{") else {}


def test_readiness_follows_every_reporter_and_liveness_stays_up():
    h = health.Health()
    h.report("startup", ready=False, detail="starting")
    server = h.serve("127.0.0.1", 0)
    port = server.server_address[1]
    try:
        assert get(port, "/liveness")[0] == 200
        status, body = get(port, "/readiness")
        assert status == 503 and body["startup"]["detail"] == "starting"
        h.report("startup", ready=True)
        h.report("dataplane", ready=True, detail="3 routes")
        assert get(port, "/readiness")[0] == 200
        h.report("dataplane", live=False, ready=False)
        assert get(port, "/liveness")[0] == 503
        assert get(port, "/nope")[0] == 404
    finally:
        server.shutdown()


def test_sd_notify_reaches_the_notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert health.sd_notify("READY=1\nSTATUS=in sync")
        assert sock.recv(1024) == b"READY=1\nSTATUS=in sync"
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # 1 s: pings every 0.5 s
        stop = threading.Event()
        thread = health.start_watchdog(lambda: True, stop)
        try:
            assert sock.recv(1024) == b"WATCHDOG=1"
        finally:
            stop.set()
            thread.join(5)


def test_sd_notify_is_a_no_op_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not health.sd_notify("READY=1")
    assert health.start_watchdog(lambda: True, threading.Event()) is None


def test_status_json_has_felix_fields():
    data = json.loads(health.status_json(0.0, True))
    assert set(data) == {"time", "uptime", "first_update"} and data["first_update"] is True


@pytest.mark.parametrize("port", [0])
def test_metrics_registry_is_private_and_served(port):
    m = health.Metrics()
    m.routes_programmed.set(7)
    from prometheus_client import generate_latest

    assert b"pycalico_agent_routes_programmed 7.0" in generate_latest(m.registry)
