"""A real etcd (Debian's etcd-server) with mutual TLS for tests and benchmarks.

Certificates come from the openssl CLI into a private directory; the server
requires client certificates. Every process and directory is removed on stop.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycalico.datastore.etcd import EtcdClient, TlsConfig
from pycalico.errors import DatastoreError

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL_BIN = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    # A client certificate signed by an unrelated CA: must be refused.
    rogue_cert: Path
    rogue_key: Path
    rogue_ca: Path

    def client_tls(self) -> TlsConfig:
        return TlsConfig(str(self.ca), str(self.client_cert), str(self.client_key))


def make_pki(directory: Path, server_ips: tuple[str, ...] = ()) -> Pki:
    """A test CA with server, client and rogue certificates; the server's also names ``server_ips``."""
    directory.mkdir(parents=True, exist_ok=True)
    d = directory

    def ca(name: str) -> None:
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
                 cwd=d)

    def leaf(name: str, ca_name: str, usage: str, san: str) -> None:
        ext = d / f"{name}.ext"
        lines = [f"extendedKeyUsage={usage}", "basicConstraints=CA:FALSE"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca_name}.pem", "-CAkey", f"{ca_name}.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name, cwd=d)

    ca("ca")
    ca("rogue-ca")
    leaf("server", "ca", "serverAuth,clientAuth", ",".join(["IP:127.0.0.1", "DNS:localhost",
                                                           *(f"IP:{ip}" for ip in server_ips)]))
    leaf("client", "ca", "clientAuth", "")
    leaf("rogue", "rogue-ca", "clientAuth", "")
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return Pki(d, d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
               d / "rogue.pem", d / "rogue.key", d / "rogue-ca.pem")


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"


class EtcdCluster:
    """One or more etcd members on loopback with client-cert auth required."""

    def __init__(self, members: int = 1, prefix: str = "pct") -> None:
        self.base = Path(tempfile.mkdtemp(prefix=f"{prefix}-etcd-"))
        self.pki = make_pki(self.base / "pki")
        token = f"{prefix}-{os.getpid()}-{int(time.time() * 1000)}"
        self.token = token
        self.members = [
            Member(f"m{i}", free_port(), free_port(), self.base / f"m{i}", self.base / f"m{i}.log")
            for i in range(members)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def tls(self) -> TlsConfig:
        return self.pki.client_tls()

    def client(self, **kwargs: Any) -> EtcdClient:
        return EtcdClient(self.endpoints, self.tls(), **kwargs)

    def _command(self, m: Member) -> list[str]:
        p = self.pki
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [
            ETCD_BIN, "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--cert-file", str(p.server_cert), "--key-file", str(p.server_key),
            "--trusted-ca-file", str(p.ca), "--client-cert-auth",
            "--peer-cert-file", str(p.server_cert), "--peer-key-file", str(p.server_key),
            "--peer-trusted-ca-file", str(p.ca), "--peer-client-cert-auth",
            "--logger", "zap", "--log-outputs", str(m.log_file),
            # etcd's default timings: shorter ones make elections flap on a loaded machine.
            "--heartbeat-interval", "100", "--election-timeout", "1000",
        ]

    def start_member(self, m: Member) -> None:
        m.proc = subprocess.Popen(self._command(m), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        for m in self.members:
            self.start_member(m)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0, members: list[Member] | None = None) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        for m in members or self.members:
            client = EtcdClient([m.client_url], self.tls(), timeout=2.0, connect_timeout=1.0)
            while True:
                try:
                    client.put("/pct-health", "ok")
                    break
                except DatastoreError as exc:
                    last = exc
                if m.proc is not None and m.proc.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited: {m.log_file.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd {m.name} not healthy in {timeout}s: {last}")
                time.sleep(0.05)
            client.close()

    def kill(self, index: int) -> None:
        m = self.members[index]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(10)

    def stop_member(self, index: int) -> None:
        m = self.members[index]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.terminate()
            try:
                m.proc.wait(10)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(10)

    def restart_member(self, index: int, timeout: float = 20.0) -> None:
        m = self.members[index]
        self.start_member(m)
        self.wait_healthy(timeout, [m])

    def stop(self) -> None:
        for i in range(len(self.members)):
            try:
                self.stop_member(i)
            except Exception:
                self.kill(i)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def issue_client_cert(pki: Pki, name: str, subject: str) -> tuple[Path, Path]:
    """A client certificate of the test CA with the given subject (``/CN=kubernetes``, or
    ``/O=pycalico`` for one without a Common Name); returns (certificate, key)."""
    d = pki.dir
    (d / f"{name}.ext").write_text("extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    (d / f"{name}.key").chmod(0o600)
    return d / f"{name}.pem", d / f"{name}.key"


def stored_value(client: EtcdClient, key: str) -> str | None:
    """The value stored at ``key``, None when there is no such key."""
    kv = client.get(key)
    return None if kv is None else kv.value
