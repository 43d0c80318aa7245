"""pycalico-confd: watch etcd, render BIRD's config, check it, switch, reload.

A new config is written next to the live one, parsed with ``bird -p -c``, and
only then moved into place and loaded with ``birdc configure``; a config BIRD
rejects is kept as ``bird.conf.rejected`` and the last good one stays live.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pycalico.bgp import bird
from pycalico.bgp import config as bgpconfig
from pycalico.bgp import secrets as bgpsecrets
from pycalico.config import DatastoreSettings
from pycalico.datastore.etcd import EtcdClient, KeyValue
from pycalico.datastore.syncer import Syncer, TypedCache
from pycalico.errors import PycalicoError
from pycalico.model import BGPConfiguration, BGPPeer, IPPool, Node, keys

log = logging.getLogger("pycalico.confd")


def nodename_from_env(env: dict[str, str] | os._Environ[str]) -> str:
    name = (env.get("NODENAME") or "").strip()
    if name:
        return name
    path = Path(env.get("PYCALICO_STATE_DIR") or "/var/lib/pycalico") / "nodename"
    if path.exists():
        return path.read_text().strip()
    return (env.get("HOSTNAME") or socket.gethostname()).strip().lower()


def interface_of(ip: str) -> str:
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=30).stdout
    for entry in json.loads(out or "[]"):
        for addr in entry.get("addr_info") or []:
            if addr.get("local") == ip:
                return str(entry["ifname"])
    return ""


class Confd:
    def __init__(self, client: EtcdClient, nodename: str, bird_dir: Path, ctl: str, *,
                 router_id: str = "", bird_bin: str = "bird",
                 secrets_dir: str | os.PathLike[str] = bgpsecrets.DEFAULT_DIRECTORY) -> None:
        self.client = client
        self.password = bgpsecrets.resolver(bgpsecrets.FileSecrets(secrets_dir), log)
        self.nodename = nodename
        self.conf = bird_dir / "bird.conf"
        self.ctl = ctl
        self.router_id = router_id
        self.bird_bin = bird_bin
        self.sources: dict[str, tuple[str, Any]] = {
            "pools": (keys.resource_prefix(IPPool.PLURAL), IPPool),
            "nodes": (keys.resource_prefix(Node.PLURAL), Node),
            "peers": (keys.resource_prefix(BGPPeer.PLURAL), BGPPeer),
            "bgpconfig": (keys.resource_prefix(BGPConfiguration.PLURAL), BGPConfiguration),
            "affinities": (keys.host_affinity_prefix(nodename), None),
        }
        self.cache: dict[str, dict[str, Any]] = {k: {} for k in self.sources}
        self.lock = threading.Lock()
        self.dirty = threading.Event()
        self.stop_event = threading.Event()
        self.syncer = Syncer(client, name="confd")
        self.watchers: list[TypedCache[Any]] = []
        self.rendered = ""
        self.last_error = ""
        self.uplink = ""
        self._uplink_ip = ""

    def _parse(self, name: str, kv: KeyValue) -> Any:
        cls = self.sources[name][1]
        if cls is None:  # affinity: value {"state": ...}; the key carries the block
            parsed = keys.parse_affinity_key(kv.key)
            value = json.loads(kv.value or "{}")
            if parsed is None or value.get("deleted") or value.get("state", "confirmed") != "confirmed":
                return None
            return parsed[1]
        return cls.from_json(json.loads(kv.value))

    def start(self) -> None:
        """One typed cache per source on the syncer (pycalico.datastore.syncer)."""
        for name, (prefix, _) in self.sources.items():
            typed: TypedCache[Any] = TypedCache(functools.partial(self._parse, name), items=self.cache[name],
                                                lock=self.lock, on_change=self.dirty.set)
            self.watchers.append(typed)
            self.syncer.subscribe(prefix, typed)

    def render(self) -> str | None:
        with self.lock:
            nodes = {n.name: n for n in self.cache["nodes"].values()}
            pools = list(self.cache["pools"].values())
            peers = list(self.cache["peers"].values())
            bgp = next((c for c in self.cache["bgpconfig"].values() if c.name == "default"), None)
            blocks = list(self.cache["affinities"].values())
        me = nodes.get(self.nodename)
        if me is not None and me.ip and (not self.uplink or self._uplink_ip != me.ip):
            self.uplink = interface_of(me.ip)
            self._uplink_ip = me.ip
        cfg = bgpconfig.compute(self.nodename, nodes, bgp, peers, pools, blocks, uplink=self.uplink,
                                router_id_override=self.router_id, password=self.password)
        return bgpconfig.render(cfg) if cfg is not None else None

    def update(self) -> bool:
        """Render, check, switch, reload. Returns True when a new config went live."""
        text = self.render()
        if text is None:
            log.info("node %s has no IPv4 address in the datastore yet; waiting", self.nodename)
            return False
        if text == self.rendered and self.conf.exists():
            return False
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        candidate = self.conf.with_name(self.conf.name + ".new")
        # 0600 from the first byte: the config may hold BGP passwords.
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
        problem = bird.check_config(str(candidate), self.bird_bin)
        if problem is not None:
            rejected = self.conf.with_name(self.conf.name + ".rejected")
            os.replace(candidate, rejected)
            self.last_error = problem
            log.error("BIRD rejected the new config (kept in %s); keeping the last good config: %s",
                      rejected, problem)
            self.rendered = text
            return False
        os.replace(candidate, self.conf)
        self.rendered = text
        self.last_error = ""
        try:
            bird.configure(self.ctl)
            log.info("BIRD reconfigured")
        except bird.BirdError as exc:
            log.info("config written; BIRD not reloaded (%s) — it reads the file when it starts", exc)
        return True

    def loop(self) -> None:
        while not self.stop_event.is_set():
            self.dirty.wait(5.0)
            if self.stop_event.is_set():
                return
            if not all(w.synced.is_set() for w in self.watchers):
                self.stop_event.wait(0.05)
                continue
            self.stop_event.wait(0.005)  # batch a burst of events into one render
            if not self.dirty.is_set():
                continue
            self.dirty.clear()
            try:
                self.update()
            except Exception:
                log.exception("render failed")
                self.stop_event.wait(1.0)
                self.dirty.set()

    def stop(self) -> None:
        self.stop_event.set()
        self.dirty.set()
        self.syncer.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = os.environ
    try:
        client = DatastoreSettings.from_env().client()
    except PycalicoError as exc:
        log.error("configuration: %s", exc)
        return 2
    backend = (env.get("CALICO_NETWORKING_BACKEND") or "bird").lower()
    if backend != "bird":
        log.info("CALICO_NETWORKING_BACKEND=%s: no BGP; confd has nothing to do", backend)
    run_dir = Path(env.get("PYCALICO_RUN_DIR") or "/var/run/pycalico")
    confd = Confd(client, nodename_from_env(env), Path(env.get("PYCALICO_BIRD_DIR") or "/etc/pycalico/bird"),
                  str(run_dir / "bird.ctl"), router_id=env.get("CALICO_ROUTER_ID", ""),
                  secrets_dir=env.get("PYCALICO_BGP_SECRETS_DIR") or bgpsecrets.DEFAULT_DIRECTORY)

    def on_signal(signum: int, frame: object) -> None:
        confd.stop_event.set()
        confd.dirty.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if backend == "bird":
        confd.start()
        confd.loop()
    else:
        while not confd.stop_event.wait(3600):
            pass
    confd.stop()
    time.sleep(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
