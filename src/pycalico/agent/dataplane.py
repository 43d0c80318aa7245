"""Make the kernel match a ``Desired``: devices, routes, neighbours, FDB.

Routes, neighbours and FDB entries are written as pipelined rtnetlink requests
(``pycalico.agent.netlink``: thousands per apply at the kernel's own cost); devices
with ``ip``; reads through ``ip -j``. The agent owns only:
routes carrying its route protocol (Felix's 80 by default), the ``vxlan.calico``
and ``tunl0`` devices, and permanent neighbour/FDB entries on ``vxlan.calico``.
Every other route — BIRD's, the CNI plugin's, the operator's — is left alone.

A pool that changes its encapsulation (IPIP → VXLAN, VXLAN → IPIP) keeps each remote prefix's
old route until the new one can be built: the peer's tunnel address for the new mode arrives
with its Node update a moment after the pool changes (``Desired.awaiting``). A kept route
through ``vxlan.calico`` keeps that device (and its neighbours and FDB) as well, and
``HANDOVER_DEVICE_GRACE`` seconds after the last one, for peers that switch later.

Make-before-break when BIRD takes a pool's routes over (a live VXLAN → BGP migration): a
tunnel or direct route the agent programmed for a prefix BIRD now routes is kept — and the
``vxlan.calico`` device with it — until BIRD's own route for that prefix is in the kernel, or
``handover_timeout`` seconds passed. BIRD installs with metric 32 and the agent with metric 0,
so both coexist and the agent's route wins until it goes. The device stays
``HANDOVER_DEVICE_GRACE`` seconds longer: peers whose BIRD is slower still send VXLAN here.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.agent.calc import IPIP_DEVICE, VXLAN_DEVICE, Desired, IpipDevice, Route, VxlanDevice
from pycalico.agent.netlink import Batch
from pycalico.errors import DataplaneError

log = logging.getLogger(__name__)

HANDOVER_DEVICE_GRACE = 10.0


def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise DataplaneError(f"{' '.join(argv[:4])}: {proc.stderr.strip()[:500]}")
    return proc.stdout


def _json(argv: list[str]) -> list[dict[str, Any]]:
    out = _run(argv, check=False)
    if not out.strip():
        return []
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        return []
    return data if isinstance(data, list) else []


def _diff(have: Mapping[str, str], want: Mapping[str, str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """What turns ``have`` into ``want`` (key → value): the entries to replace (they
    differ or are missing) and those to delete (no longer wanted)."""
    replace = [(key, value) for key, value in want.items() if have.get(key) != value]
    return replace, [(key, have[key]) for key in have.keys() - want.keys()]


def route_from_kernel(entry: dict[str, Any]) -> Route:
    kind = entry.get("type", "unicast")
    dst = entry["dst"]
    if dst != "default" and "/" not in dst:
        dst += "/32"
    if kind == "blackhole":
        return Route(dst, "blackhole")
    return Route(dst, "unicast", entry.get("gateway"), entry.get("dev"), "onlink" in (entry.get("flags") or []),
                 entry.get("scope") == "link" and not entry.get("gateway"))


@dataclass
class ApplyStats:
    routes_added: int = 0
    routes_removed: int = 0
    neigh_changed: int = 0
    fdb_changed: int = 0
    devices_changed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return self.routes_added + self.routes_removed + self.neigh_changed + self.fdb_changed + self.devices_changed


class Dataplane:
    def __init__(self, protocol: int = 80, handover_timeout: float = 60.0) -> None:
        self.protocol = protocol
        self.handover_timeout = handover_timeout
        self.held: dict[str, Route] = {}  # routes kept until BIRD routes their prefix
        self._held_since: dict[str, float] = {}
        self._vxlan_kept = False
        self._vxlan_keep_until = 0.0
        self._ipip_supported: bool | None = None
        self.routes_programmed = 0
        self._applied: Desired | None = None
        self._programmed: dict[str, Route] = {}
        self._vxlan_ready = False
        self._ipip_ready = False

    # ---- reads ---------------------------------------------------------------------------
    def our_routes(self) -> dict[str, Route]:
        out: dict[str, Route] = {}
        for entry in _json(["ip", "-j", "-4", "route", "show", "table", "main", "proto", str(self.protocol)]):
            route = route_from_kernel(entry)
            out[route.dst] = route
        return out

    def bird_routes(self) -> set[str]:
        return {route_from_kernel(e).dst
                for e in _json(["ip", "-j", "-4", "route", "show", "table", "main", "proto", "bird"])}

    def handover(self, desired: Desired, have: Mapping[str, Route]) -> dict[str, Route]:
        """The routes in ``have`` to keep although ``desired`` drops them: BIRD routes their
        prefix now but has no route for it in the kernel yet (held at most ``handover_timeout``)."""
        gone = {dst: r for dst, r in have.items()
                if r.kind == "unicast" and dst in desired.bird_routed and dst not in desired.routes}
        if not gone:
            self._held_since.clear()
            return {}
        bird = self.bird_routes()
        now = time.monotonic()
        held = {}
        for dst, route in gone.items():
            if dst in bird:
                continue
            since = self._held_since.setdefault(dst, now)
            if now - since < self.handover_timeout:
                held[dst] = route
            else:
                log.warning("handover: BIRD has no route for %s after %.0f s; removing the agent's", dst,
                            self.handover_timeout)
        self._held_since = {dst: t for dst, t in self._held_since.items() if dst in held}
        if held.keys() != self.held.keys():
            if held:
                log.info("handover: keeping %d routes until BIRD routes them", len(held))
            else:
                log.info("handover: BIRD routes every prefix now; the agent's routes go")
        return held

    def link(self, name: str) -> dict[str, Any] | None:
        links = _json(["ip", "-j", "-d", "addr", "show", "dev", name])
        return links[0] if links else None

    def links(self) -> set[str]:
        return {entry["ifname"] for entry in _json(["ip", "-j", "link", "show"])}

    # ---- devices -------------------------------------------------------------------------
    def ensure_vxlan(self, want: VxlanDevice | None, stats: ApplyStats) -> None:
        have = self.link(VXLAN_DEVICE)
        if want is None:
            if have is not None:
                _run(["ip", "link", "del", VXLAN_DEVICE])
                stats.devices_changed += 1
            return
        if have is not None:
            data = (have.get("linkinfo") or {}).get("info_data") or {}
            kind = (have.get("linkinfo") or {}).get("info_kind")
            if (kind != "vxlan" or data.get("id") != want.vni or data.get("port") != want.port
                    or data.get("local") != want.local or data.get("link") != want.parent):
                log.info("recreating %s: parameters changed", VXLAN_DEVICE)
                _run(["ip", "link", "del", VXLAN_DEVICE])
                have = None
        if have is None:
            _run(["ip", "link", "add", VXLAN_DEVICE, "type", "vxlan", "id", str(want.vni), "dstport",
                  str(want.port), "local", want.local, "dev", want.parent, "nolearning"])
            stats.devices_changed += 1
            have = self.link(VXLAN_DEVICE) or {}
        self._settle_device(VXLAN_DEVICE, have, want.mac, want.mtu, want.address, stats)

    def ipip_supported(self) -> bool:
        if self._ipip_supported is None:
            if self.link(IPIP_DEVICE) is not None:
                self._ipip_supported = True
            else:
                proc = subprocess.run(["ip", "link", "add", IPIP_DEVICE, "type", "ipip"], capture_output=True)
                self._ipip_supported = proc.returncode == 0 or self.link(IPIP_DEVICE) is not None
                if not self._ipip_supported:
                    log.warning("this kernel has no ipip support: IPIP routes are computed but not programmed")
        return self._ipip_supported

    def ensure_ipip(self, want: IpipDevice | None, stats: ApplyStats) -> bool:
        """Returns whether tunl0 is usable."""
        if want is None:
            return False
        if not self.ipip_supported():
            return False
        have = self.link(IPIP_DEVICE) or {}
        self._settle_device(IPIP_DEVICE, have, None, want.mtu, want.address, stats)
        return True

    def _settle_device(self, name: str, have: dict[str, Any], mac: str | None, mtu: int, address: str,
                       stats: ApplyStats) -> None:
        cmds: list[list[str]] = []
        if mac and str(have.get("address", "")).lower() != mac:
            cmds.append(["ip", "link", "set", name, "address", mac])
        if have.get("mtu") != mtu:
            cmds.append(["ip", "link", "set", name, "mtu", str(mtu)])
        if "UP" not in (have.get("flags") or []):
            cmds.append(["ip", "link", "set", name, "up"])
        addrs = [(a.get("local"), a.get("prefixlen")) for a in have.get("addr_info") or [] if a.get("family") == "inet"]
        for local, plen in addrs:
            if (local, plen) != (address, 32):
                cmds.append(["ip", "addr", "del", f"{local}/{plen}", "dev", name])
        if (address, 32) not in addrs:
            cmds.append(["ip", "addr", "replace", f"{address}/32", "dev", name])
        for cmd in cmds:
            _run(cmd)
        if cmds:
            stats.devices_changed += 1

    # ---- neighbours and FDB --------------------------------------------------------------
    def sync_vxlan_peers(self, desired: Desired, stats: ApplyStats, cached: Desired | None = None) -> None:
        """Diff against the kernel, or against ``cached`` (what the last apply programmed)."""
        if desired.vxlan is None:
            return
        if cached is not None:
            have_n = dict(cached.vxlan_neighbours)
        else:
            have_n = {e["dst"]: str(e.get("lladdr", "")).lower()
                      for e in _json(["ip", "-j", "-4", "neigh", "show", "dev", VXLAN_DEVICE])
                      if "PERMANENT" in (e.get("state") or [])}
        batch = Batch()
        replace, delete = _diff(have_n, desired.vxlan_neighbours)
        for ip, mac in replace:
            batch.neigh_replace(ip, mac, VXLAN_DEVICE)
        for ip, _ in delete:
            batch.neigh_delete(ip, VXLAN_DEVICE)
        stats.neigh_changed += len(replace) + len(delete)
        if cached is not None:
            have_f = dict(cached.vxlan_fdb)
        else:
            fdb = _json(["bridge", "-j", "fdb", "show", "dev", VXLAN_DEVICE])
            have_f = {str(e["mac"]).lower(): str(e["dst"]) for e in fdb
                      if e.get("state") == "permanent" and e.get("dst") and e.get("mac") != "00:00:00:00:00:00"}
        replace, delete = _diff(have_f, desired.vxlan_fdb)
        for mac, dst in replace:
            batch.fdb_replace(mac, dst, VXLAN_DEVICE)
        for mac, dst in delete:
            batch.fdb_delete(mac, dst, VXLAN_DEVICE)
        stats.fdb_changed += len(replace) + len(delete)
        self._commit(batch, stats)

    @staticmethod
    def _commit(batch: Batch, stats: ApplyStats) -> None:
        errors = batch.commit()
        if errors:
            stats.errors += errors[:20]
            log.warning("netlink: %d of the requests refused, first: %s", len(errors), "; ".join(errors[:5]))

    # ---- routes ----------------------------------------------------------------------------
    def sync_routes(self, desired: Desired, stats: ApplyStats, *, ipip_ready: bool, vxlan_ready: bool,
                    cached: Desired | None = None, held: Mapping[str, Route] | None = None) -> dict[str, Route]:
        """Returns what is programmed now: the desired routes and the ``held`` ones left in place."""
        held = held or {}
        want = dict(desired.routes)
        awaiting = set(desired.awaiting)  # what we have for these stays until their new route can be built
        for dst, route in list(want.items()):
            if (route.dev == IPIP_DEVICE and not ipip_ready) or (route.dev == VXLAN_DEVICE and not vxlan_ready):
                del want[dst]
                awaiting.add(dst)
        have = dict(self._programmed) if cached is not None else self.our_routes()
        batch = Batch()
        proto = self.protocol
        for dst, route in want.items():
            if have.get(dst) != route:
                batch.route_replace(route, proto)
                stats.routes_added += 1
        # workload /32s: made by the CNI plugin; repaired (with our protocol) only when missing
        if desired.workload_routes and (cached is None or cached.workload_routes != desired.workload_routes):
            existing = {route_from_kernel(e).dst for e in _json(["ip", "-j", "-4", "route", "show", "table", "main",
                                                                 "scope", "link"])}
            links = self.links()
            for dst, route in desired.workload_routes.items():
                if dst not in existing and route.dev in links:
                    batch.route_replace(route, proto)
                    stats.routes_added += 1
        for dst in have.keys() - want.keys() - desired.workload_routes.keys() - held.keys() - awaiting:
            batch.route_delete(dst, proto, blackhole=have[dst].kind == "blackhole")
            stats.routes_removed += 1
        self._commit(batch, stats)
        self.routes_programmed = len(want)
        kept = {dst: route for dst, route in held.items() if dst in have}
        kept.update((dst, have[dst]) for dst in awaiting if dst in have and dst not in want)
        return want | kept

    @property
    def holding(self) -> bool:
        """Routes or a device kept for BIRD's handover: the next apply should come soon."""
        return bool(self.held) or time.monotonic() < self._vxlan_keep_until

    def forget(self) -> None:
        """Make the next apply read the kernel."""
        self._applied = None

    # ---- all -------------------------------------------------------------------------------
    def apply(self, desired: Desired, *, full: bool = True) -> ApplyStats:
        """``full`` reads the kernel and repairs any drift; otherwise only the difference
        from the previous apply is written (one ``ip -batch`` for a watch event)."""
        stats = ApplyStats()
        cached = None if full else self._applied
        held: dict[str, Route] = {}
        if desired.bird_routed or self.held:
            held = self.handover(desired, dict(self._programmed) if cached is not None else self.our_routes())
        # held routes through vxlan.calico keep the device (and its neighbours and FDB) as it is
        now = time.monotonic()
        # a route kept through vxlan.calico for an awaited prefix (VXLAN -> IPIP) keeps the device too
        awaiting_vxlan = any(getattr(self._programmed.get(dst), "dev", None) == VXLAN_DEVICE
                             for dst in desired.awaiting)
        if desired.vxlan is not None:
            self._vxlan_keep_until = 0.0
        elif awaiting_vxlan or any(r.dev == VXLAN_DEVICE for r in held.values()) or (
                not held and any(r.dev == VXLAN_DEVICE for r in self.held.values())):
            self._vxlan_keep_until = now + HANDOVER_DEVICE_GRACE
        elif desired.bird_routed and self._vxlan_ready and not self._vxlan_keep_until:
            # nothing held (BIRD was first here), but peers whose BIRD is slower still send VXLAN
            self._vxlan_keep_until = now + HANDOVER_DEVICE_GRACE
        keep_vxlan = desired.vxlan is None and now < self._vxlan_keep_until
        vxlan_ready = self._vxlan_ready
        if keep_vxlan:
            self._vxlan_kept = True
        elif cached is None or cached.vxlan != desired.vxlan or self._vxlan_kept:
            self._vxlan_kept = False
            vxlan_ready = False
            try:
                self.ensure_vxlan(desired.vxlan, stats)
                vxlan_ready = desired.vxlan is not None
            except DataplaneError as exc:
                stats.errors.append(str(exc))
            cached = None  # a new or changed device has none of the old peers
        ipip_ready = self._ipip_ready
        if cached is None or cached.ipip != desired.ipip:
            ipip_ready = False
            try:
                ipip_ready = self.ensure_ipip(desired.ipip, stats)
            except DataplaneError as exc:
                stats.errors.append(str(exc))
        if vxlan_ready:
            self.sync_vxlan_peers(desired, stats, cached)
        self._programmed = self.sync_routes(desired, stats, ipip_ready=ipip_ready, vxlan_ready=vxlan_ready,
                                            cached=cached, held=held)
        self.held = held
        self._vxlan_ready, self._ipip_ready = vxlan_ready, ipip_ready
        self._applied = None if stats.errors else desired  # after an error the next apply reads the kernel
        return stats
