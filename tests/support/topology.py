"""Namespace-node topologies for integration tests and benchmarks.

A router namespace joins one or two "subnets" (each a bridge in the fabric
namespace); host namespaces hang off a subnet with ``eth0`` and a default route
via the router; pods are nested namespaces behind a ``cali…`` veth, built the
way Calico's CNI plugin builds them. An optional "outside" namespace hangs off
the router with no route back to any pool.

Processes started through a topology (agent, confd, BIRD) run inside the host
namespace with ``ip netns exec``; each host namespace gets a TCP forwarder on
its own 127.0.0.1 to every etcd client port, so the product runs unchanged
with ``ETCD_ENDPOINTS=https://127.0.0.1:<port>``. Everything is removed in
``close()`` (use the topology as a context manager).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
VENV_BIN = Path(sys.executable).parent


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def nsexec(ns: str, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)


@contextlib.contextmanager
def in_netns(ns: str) -> Iterator[None]:
    """Switch the calling thread (only) into a named network namespace."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        try:
            yield
        finally:
            _libc.setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
        os.close(target)


def poll(fn: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition") -> object:
    """Call ``fn`` until it returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # keep polling, report the last failure
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class NetnsForwarder:
    """Accepts on 127.0.0.1:<port> inside a namespace, connects to 127.0.0.1:<port> in ours."""

    def __init__(self, ns: str, ports: list[int]) -> None:
        self.ns = ns
        self.ports = ports
        self.sel = selectors.DefaultSelector()
        self.listeners: list[socket.socket] = []
        self._stop = False
        self._conns: set[socket.socket] = set()
        with in_netns(ns):
            for port in ports:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                s.listen(64)
                s.setblocking(False)
                self.sel.register(s, selectors.EVENT_READ, ("accept", port))
                self.listeners.append(s)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"fwd-{ns}")
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self.sel.select(0.2):
                kind, data = key.data
                if kind == "accept":
                    try:
                        client, _ = key.fileobj.accept()  # type: ignore[union-attr]
                        upstream = socket.create_connection(("127.0.0.1", data), timeout=2)
                    except OSError:
                        with contextlib.suppress(Exception):
                            client.close()
                        continue
                    for a, b in ((client, upstream), (upstream, client)):
                        a.setblocking(False)
                        self.sel.register(a, selectors.EVENT_READ, ("pipe", b))
                        self._conns.add(a)
                else:
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    dst: socket.socket = data
                    try:
                        chunk = src.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if chunk:
                        try:
                            dst.setblocking(True)
                            dst.sendall(chunk)
                            dst.setblocking(False)
                            continue
                        except OSError:
                            pass
                    self._close_pair(src, dst)

    def _close_pair(self, a: socket.socket, b: socket.socket) -> None:
        for s in (a, b):
            if s in self._conns:
                self._conns.discard(s)
                with contextlib.suppress(Exception):
                    self.sel.unregister(s)
                with contextlib.suppress(Exception):
                    s.close()

    def drop_connections(self) -> None:
        """Cut every open connection (like a network blip)."""
        for s in list(self._conns):
            with contextlib.suppress(Exception):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        for s in list(self._conns) + self.listeners:
            with contextlib.suppress(Exception):
                s.close()


@dataclass
class Pod:
    name: str
    ns: str
    host: Host
    ip: str
    veth: str


@dataclass
class Host:
    name: str  # node name
    ns: str
    ip: str  # with prefix, e.g. 10.1.0.1/24
    subnet: int
    topo: Topology
    dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pods: list[Pod] = field(default_factory=list)

    @property
    def addr(self) -> str:
        return self.ip.split("/")[0]

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return nsexec(self.ns, *args, check=check, timeout=timeout)

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def bird_dir(self) -> Path:
        return self.dir / "bird"

    @property
    def bird_ctl(self) -> Path:
        return self.run_dir / "bird.ctl"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "CALICO_", "PYCALICO_"))}
        env.update(self.topo.base_env)
        env.update({
            "NODENAME": self.name,
            "PYCALICO_STATE_DIR": str(self.state_dir),
            "PYCALICO_RUN_DIR": str(self.run_dir),
            "PYCALICO_BIRD_DIR": str(self.bird_dir),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.stop(name)
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], env=env or self.env(),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start_agent(self, **extra: str) -> subprocess.Popen[bytes]:
        return self.spawn("agent", [str(VENV_BIN / "pycalico-agent")], self.env(**extra))

    def start_confd(self, **extra: str) -> subprocess.Popen[bytes]:
        return self.spawn("confd", [str(VENV_BIN / "pycalico-confd")], self.env(**extra))

    def start_bird(self) -> subprocess.Popen[bytes]:
        conf = self.bird_dir / "bird.conf"
        poll(conf.exists, 20, what=f"{conf} written by confd")
        # -R: graceful restart recovery, as calico-node runs BIRD (kernel routes kept until BGP converged)
        return self.spawn("bird", ["bird", "-R", "-f", "-c", str(conf), "-s", str(self.bird_ctl),
                                   "-P", str(self.run_dir / "bird.pid")])

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ip", "netns", "exec", self.ns, str(VENV_BIN / "pycalicoctl"), *args],
                              env=self.env(), capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"pycalicoctl {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            proc.wait(10)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def routes(self) -> str:
        return self.run("ip", "-4", "route", "show").stdout

    def add_pod(self, name: str, ip: str, mtu: int = 1500) -> Pod:
        """A pod the way the CNI plugin makes one (no datastore records)."""
        pod_ns = f"{self.ns}-{name}"
        veth = "cali" + hashlib.sha1(f"{self.ns}/{name}".encode()).hexdigest()[:11]
        sh("ip", "netns", "add", pod_ns)
        self.topo._namespaces.append(pod_ns)
        self.run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod_ns)
        self.run("ip", "link", "set", veth, "address", "ee:ee:ee:ee:ee:ee", "mtu", str(mtu), "up")
        for key, value in (("proxy_arp", "1"), ("forwarding", "1")):
            self.run("sysctl", "-qw", f"net.ipv4.conf.{veth}.{key}={value}")
        self.run("sysctl", "-qw", f"net.ipv4.neigh.{veth}.proxy_delay=0")
        self.run("ip", "route", "replace", f"{ip}/32", "dev", veth, "scope", "link")
        nsexec(pod_ns, "ip", "link", "set", "lo", "up")
        nsexec(pod_ns, "ip", "link", "set", "eth0", "mtu", str(mtu), "up")
        nsexec(pod_ns, "ip", "addr", "add", f"{ip}/32", "dev", "eth0")
        nsexec(pod_ns, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        nsexec(pod_ns, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        pod = Pod(name, pod_ns, self, ip, veth)
        self.pods.append(pod)
        return pod


class Topology:
    """``subnets`` host counts, e.g. ``[3]`` (one subnet, three hosts) or ``[2, 1]``."""

    def __init__(self, prefix: str, subnets: list[int], *, etcd_ports: list[int] | None = None,
                 base_env: dict[str, str] | None = None, outside: bool = False, second_octet: int = 77) -> None:
        # namespace and interface names stay short; a long prefix keeps its uniqueness through a hash
        self.prefix = prefix if len(prefix) <= 8 else "n" + hashlib.sha1(prefix.encode()).hexdigest()[:7]
        self.subnets = subnets
        self.etcd_ports = etcd_ports or []
        self.base_env = dict(base_env or {})
        self.want_outside = outside
        self.o2 = second_octet
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-topo-"))
        self.hosts: list[Host] = []
        self._namespaces: list[str] = []
        self._forwarders: list[NetnsForwarder] = []
        self.fabric = f"{self.prefix}-fab"
        self.router = f"{self.prefix}-rtr"
        self.outside = f"{self.prefix}-out" if outside else ""
        self.outside_ip = f"172.31.{self.o2}.1" if outside else ""

    def subnet_cidr(self, index: int) -> str:
        return f"10.{self.o2}.{index}.0/24"

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self._namespaces.append(name)
        nsexec(name, "ip", "link", "set", "lo", "up")

    def build(self) -> Topology:
        self._netns(self.fabric)
        self._netns(self.router)
        nsexec(self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for s in range(len(self.subnets)):
            br = f"br{s}"
            nsexec(self.fabric, "ip", "link", "add", br, "type", "bridge")
            nsexec(self.fabric, "ip", "link", "set", br, "up")
            leg = f"r{s}"
            nsexec(self.fabric, "ip", "link", "add", leg, "type", "veth", "peer", "name", f"eth{s}",
                   "netns", self.router)
            nsexec(self.fabric, "ip", "link", "set", leg, "master", br, "up")
            nsexec(self.router, "ip", "addr", "add", f"10.{self.o2}.{s}.254/24", "dev", f"eth{s}")
            nsexec(self.router, "ip", "link", "set", f"eth{s}", "up")
        if self.outside:
            self._netns(self.outside)
            nsexec(self.router, "ip", "link", "add", "out0", "type", "veth", "peer", "name", "eth0",
                   "netns", self.outside)
            nsexec(self.router, "ip", "addr", "add", f"172.31.{self.o2}.254/24", "dev", "out0")
            nsexec(self.router, "ip", "link", "set", "out0", "up")
            nsexec(self.outside, "ip", "addr", "add", f"{self.outside_ip}/24", "dev", "eth0")
            nsexec(self.outside, "ip", "link", "set", "eth0", "up")
            nsexec(self.outside, "ip", "route", "add", "default", "via", f"172.31.{self.o2}.254")
        n = 0
        for s, count in enumerate(self.subnets):
            for _ in range(count):
                n += 1
                self.add_host(f"{self.prefix}-node{n}", s, n)
        return self

    def add_host(self, name: str, subnet: int, index: int) -> Host:
        ns = f"{self.prefix}-h{index}"
        self._netns(ns)
        leg = f"h{index}"
        nsexec(self.fabric, "ip", "link", "add", leg, "type", "veth", "peer", "name", "eth0", "netns", ns)
        nsexec(self.fabric, "ip", "link", "set", leg, "master", f"br{subnet}", "up")
        ip = f"10.{self.o2}.{subnet}.{index}/24"
        nsexec(ns, "ip", "addr", "add", ip, "dev", "eth0")
        nsexec(ns, "ip", "link", "set", "eth0", "up")
        nsexec(ns, "ip", "route", "add", "default", "via", f"10.{self.o2}.{subnet}.254")
        nsexec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        hdir = self.dir / name
        for sub in ("state", "run", "bird"):
            (hdir / sub).mkdir(parents=True, exist_ok=True)
        host = Host(name, ns, ip, subnet, self, hdir)
        if self.etcd_ports:
            self._forwarders.append(NetnsForwarder(ns, self.etcd_ports))
        self.hosts.append(host)
        return host

    def drop_etcd_connections(self) -> None:
        for f in self._forwarders:
            f.drop_connections()

    def close(self) -> None:
        for host in self.hosts:
            for name in list(host.procs):
                with contextlib.suppress(Exception):
                    host.stop(name)
        for f in self._forwarders:
            with contextlib.suppress(Exception):
                f.close()
        for ns in reversed(self._namespaces):
            # kill stragglers that still live in the namespace, then delete it
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(Exception):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Topology:
        try:
            return self.build()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
