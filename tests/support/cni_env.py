"""A node for CNI tests and benchmarks: a "host" network namespace with its own etcd,
the datastore prepared (pool, Node, ClusterInformation), the plugin installed in a
private CNI bin dir, an optional fast-path server, and pods as named namespaces.

The calling thread (pytest's main thread, or the benchmark's) is switched into the
host namespace for the lifetime of the environment, so everything it starts — etcd,
plugin processes, the fast-path server's threads — lives there. ``close()`` (or the
context manager) switches back and removes every namespace and file, also on failure.

The host namespace gets a default route out of an uplink veth to a peer "gw"
namespace: proxy ARP on the pods' veths only answers when the host has a route to
169.254.1.1 through another interface (test-environment.md).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycalico.cni.install import install
from pycalico.model import ClusterInformation, IPPool, Node, ResourceStore
from tests.support.etcd import EtcdCluster

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
DEBIAN_CNI = "/usr/lib/cni"
HOST_IP = "172.31.250.1"
GW_IP = "172.31.250.2"
POOL_CIDR = "10.77.0.0/16"


def sh(*args: str, check: bool = True, timeout: float = 30, input: bytes | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode().strip()}")
    return proc


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def free_tcp_port() -> int:
    """A port nobody listens on (in the calling thread's namespace)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


def add_netns(name: str) -> str:
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    return netns_path(name)


def del_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


@dataclass
class Outcome:
    """What a plugin invocation printed and returned."""

    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None


@dataclass
class CniEnv:
    prefix: str
    fast: bool = True
    nodename: str = "node-1"
    block_size: int = 26
    etcd: EtcdCluster | None = None
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pycni-")))
    pods: list[str] = field(default_factory=list)
    server: Any = None

    # ---- lifecycle ---------------------------------------------------------------------

    def __post_init__(self) -> None:
        self.host_ns = f"{self.prefix}-host"
        self.gw_ns = f"{self.prefix}-gw"
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._entered = False
        self.bin_dir = self.base / "bin"
        self.socket_path = str(self.base / "run" / "cni.sock")

    def __enter__(self) -> CniEnv:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> CniEnv:
        add_netns(self.host_ns)
        add_netns(self.gw_ns)
        sh("ip", "-n", self.host_ns, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", self.gw_ns)
        sh("ip", "-n", self.host_ns, "addr", "add", f"{HOST_IP}/24", "dev", "up0")
        sh("ip", "-n", self.host_ns, "link", "set", "up0", "up")
        sh("ip", "-n", self.gw_ns, "addr", "add", f"{GW_IP}/24", "dev", "up1")
        sh("ip", "-n", self.gw_ns, "link", "set", "up1", "up")
        sh("ip", "-n", self.host_ns, "route", "add", "default", "via", GW_IP)
        sh("ip", "netns", "exec", self.host_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        fd = os.open(netns_path(self.host_ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        self._entered = True
        # etcd and everything else now start inside the host namespace.
        self.etcd = EtcdCluster(1, prefix=self.prefix).start()
        (self.base / "state").mkdir()
        (self.base / "run").mkdir()
        (self.base / "state" / "nodename").write_text(self.nodename + "\n")
        (self.base / "state" / "mtu").write_text("1440\n")
        install(self.bin_dir, sys.executable)
        self.client = self.etcd.client()
        self.store = ResourceStore(self.client)
        self.prepare_datastore()
        if self.fast:
            self.start_server()
        return self

    def prepare_datastore(self) -> None:
        self.store.create(ClusterInformation("default", {"clusterGUID": uuid.uuid4().hex, "datastoreReady": True,
                                                          "clusterType": "pycalico"}))
        self.store.create(Node(self.nodename, {"bgp": {"ipv4Address": f"{HOST_IP}/24"}}))
        self.store.create(IPPool("default-ipv4-ippool", {"cidr": POOL_CIDR, "blockSize": self.block_size,
                                                          "ipipMode": "Never", "vxlanMode": "Never",
                                                          "natOutgoing": False}))

    def start_server(self) -> None:
        from pycalico.cni.server import start_server

        self.server = start_server(self.socket_path)

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def close(self) -> None:
        try:
            self.stop_server()
        except Exception:  # noqa: BLE001 - keep cleaning
            pass
        for pod in list(self.pods):
            del_netns(pod)
        self.pods.clear()
        try:
            if getattr(self, "client", None) is not None:
                self.client.close()
            if self.etcd is not None:
                self.etcd.stop()
        finally:
            if self._entered:
                _setns(self._home)
                self._entered = False
            os.close(self._home)
            del_netns(self.gw_ns)
            del_netns(self.host_ns)
            shutil.rmtree(self.base, ignore_errors=True)

    # ---- config and invocation ---------------------------------------------------------

    def netconf(self, cni_version: str = "1.0.0", **overrides: Any) -> dict[str, Any]:
        assert self.etcd is not None
        conf: dict[str, Any] = {
            "cniVersion": cni_version,
            "name": "k8s-pod-network",
            "type": "pycalico",
            "datastore_type": "etcdv3",
            "etcd_endpoints": ",".join(self.etcd.endpoints),
            "etcd_ca_cert_file": str(self.etcd.pki.ca),
            "etcd_cert_file": str(self.etcd.pki.client_cert),
            "etcd_key_file": str(self.etcd.pki.client_key),
            "nodename_file": str(self.base / "state" / "nodename"),
            "mtu_file": str(self.base / "state" / "mtu"),
            "ipam_lock_file": str(self.base / "run" / "ipam.lock"),
            "log_file_path": str(self.base / "cni.log"),
            "log_level": "info",
            "mtu": 0,
            "ipam": {"type": "pycalico-ipam"},
        }
        conf.update(overrides)
        return conf

    def env(self, command: str, container_id: str = "", netns: str = "", ifname: str = "eth0",
            args: str = "", path: str | None = None) -> dict[str, str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command}
        if container_id:
            env["CNI_CONTAINERID"] = container_id
        if netns:
            env["CNI_NETNS"] = netns
        if ifname:
            env["CNI_IFNAME"] = ifname
        if args:
            env["CNI_ARGS"] = args
        env["CNI_PATH"] = path if path is not None else f"{self.bin_dir}:{DEBIAN_CNI}"
        if self.fast:
            env["PYCALICO_CNI_SOCKET"] = self.socket_path
        else:
            env["PYCALICO_CNI_NO_FAST_PATH"] = "1"
        return env

    def invoke(self, env: dict[str, str], stdin: bytes | str | dict[str, Any], plugin: str = "pycalico",
               timeout: float = 60) -> Outcome:
        if isinstance(stdin, dict):
            stdin = json.dumps(stdin)
        if isinstance(stdin, str):
            stdin = stdin.encode()
        binary = str(self.bin_dir / plugin) if "/" not in plugin else plugin
        proc = subprocess.run([binary], input=stdin, env=env, capture_output=True, timeout=timeout)
        return Outcome(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))

    def cni(self, command: str, container_id: str = "", netns: str = "", conf: dict[str, Any] | None = None,
            ifname: str = "eth0", args: str = "", plugin: str = "pycalico") -> Outcome:
        return self.invoke(self.env(command, container_id, netns, ifname, args),
                           conf if conf is not None else self.netconf(), plugin)

    # ---- pods --------------------------------------------------------------------------

    def new_pod(self, index: int | str) -> tuple[str, str, str]:
        """A fresh pod namespace: (netns name, netns path, container id)."""
        name = f"{self.prefix}-p{index}"
        add_netns(name)
        self.pods.append(name)
        # The first 11 characters name a plain CNI container's host veth: random there, as real
        # container IDs are (the prefix and index after them say whose it is).
        container_id = f"{uuid.uuid4().hex[:11]}{self.prefix}{index}".lower()
        return name, netns_path(name), container_id

    def remove_pod(self, name: str) -> None:
        del_netns(name)
        if name in self.pods:
            self.pods.remove(name)


# ---- ICMP from inside a namespace, many targets at once ---------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping_from(ns_path: str, targets: list[str], timeout: float = 10.0) -> set[str]:
    """Echo every target from inside ``ns_path``; returns the targets that answered.
    Unanswered echoes are resent every 200 ms until the deadline."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target_fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target_fd)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        finally:
            _setns(home)
    finally:
        os.close(target_fd)
        os.close(home)
    ident = (os.getpid() ^ threading.get_native_id()) & 0xFFFF
    answered: set[str] = set()
    deadline = time.monotonic() + timeout
    seq = 0
    try:
        sock.setblocking(False)
        while set(targets) - answered and time.monotonic() < deadline:
            for t in targets:
                if t in answered:
                    continue
                seq = (seq + 1) & 0xFFFF
                header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
                payload = b"pycalico-cni-test"
                packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
                try:
                    sock.sendto(packet, (t, 0))
                except OSError:
                    pass
            resend = time.monotonic() + 0.2
            while time.monotonic() < min(resend, deadline) and set(targets) - answered:
                ready, _, _ = select.select([sock], [], [], 0.05)
                if not ready:
                    continue
                try:
                    data, addr = sock.recvfrom(2048)
                except BlockingIOError:
                    continue
                ihl = (data[0] & 0x0F) * 4
                icmp_type, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if icmp_type == 0 and rid == ident:
                    answered.add(addr[0])
    finally:
        sock.close()
    return answered


# ---- a small runtime: conflists, as libcni runs them ---------------------------------------


def chain_confs(conflist: dict[str, Any], prev: dict[str, Any] | None,
                runtime_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Each plugin's stdin: name and cniVersion injected, runtimeConfig by capability."""
    out = []
    for plugin in conflist["plugins"]:
        conf = dict(plugin)
        conf["name"] = conflist["name"]
        conf["cniVersion"] = conflist["cniVersion"]
        caps = [k for k, v in (plugin.get("capabilities") or {}).items() if v]
        rc = {k: runtime_config[k] for k in caps if k in runtime_config}
        if rc:
            conf["runtimeConfig"] = rc
        if prev is not None:
            conf["prevResult"] = prev
        out.append(conf)
    return out


def run_chain(env: CniEnv, command: str, conflist: dict[str, Any], container_id: str, netns: str,
              runtime_config: dict[str, Any] | None = None, prev: dict[str, Any] | None = None) -> Outcome:
    """ADD/CHECK in order (ADD feeds each result to the next), DEL in reverse order."""
    rc = runtime_config or {}
    plugins = conflist["plugins"]
    order = list(range(len(plugins)))
    if command == "DEL":
        order.reverse()
    last = Outcome(0, "", "")
    result = prev
    for i in order:
        conf = chain_confs(conflist, result if command == "ADD" else prev, rc)[i]
        binary = next((os.path.join(d, plugins[i]["type"]) for d in (str(env.bin_dir), DEBIAN_CNI)
                       if os.path.exists(os.path.join(d, plugins[i]["type"]))), plugins[i]["type"])
        last = env.invoke(env.env(command, container_id, netns), conf, plugin=binary)
        if last.code != 0:
            return last
        if command == "ADD":
            result = last.json
    if command == "ADD":
        return Outcome(0, json.dumps(result), "")
    return last


def socket_in(ns_path: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside the namespace at ``ns_path`` (it stays there)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
        try:
            return socket.socket(socket.AF_INET, kind)
        finally:
            _setns(home)
    finally:
        os.close(fd)
        os.close(home)
