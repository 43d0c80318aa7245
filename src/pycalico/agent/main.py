"""pycalico-agent: Felix's job on one node.

Startup (register the Node, default pool, ClusterInformation, tunnel addresses,
MTU file), then list-then-watch pools, nodes, workload endpoints and IPAM
blocks into a cache; a reconciler thread recomputes the whole dataplane on
every change (batched) and at least every ``PYCALICO_RESYNC_INTERVAL`` seconds,
which is what repairs drift. Health on 127.0.0.1:9099, metrics on :9091, a
status key under a lease, sd_notify READY/WATCHDOG, and the CNI fast path
socket when ``pycalico.cni.server`` is installed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pycalico.agent import autodetect, startup
from pycalico.agent.calc import Block, FelixParams, IpipDevice, compute, pod_mtu, vxlan_device
from pycalico.agent.dataplane import ApplyStats, Dataplane
from pycalico.agent.health import Health, Metrics, sd_notify, start_watchdog, status_json
from pycalico.agent.nat import NatError, NatOutgoing, detect_backend
from pycalico.agent.policy.engine import PolicyEngine
from pycalico.agent.policy.metrics import PolicyMetrics
from pycalico.agent.policy.params import PolicyParams
from pycalico.agent.policy.resolve import PolicyInputs
from pycalico.agent.settings import AgentSettings
from pycalico.config import DatastoreSettings
from pycalico.datastore.etcd import EtcdClient, KeyValue
from pycalico.datastore.lease import LeaseKeeper
from pycalico.datastore.syncer import Syncer, TypedCache
from pycalico.errors import DataplaneError, DatastoreError, PycalicoError
from pycalico.model import (
    FelixConfiguration,
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    HostEndpoint,
    IPPool,
    NetworkPolicy,
    NetworkSet,
    Node,
    Profile,
    Resource,
    ResourceStore,
    Tier,
    WorkloadEndpoint,
    keys,
)

log = logging.getLogger("pycalico.agent")

SOURCES: dict[str, tuple[str, Any]] = {
    "pools": (keys.resource_prefix(IPPool.PLURAL), IPPool),
    "nodes": (keys.resource_prefix(Node.PLURAL), Node),
    "weps": (keys.resource_prefix(WorkloadEndpoint.PLURAL), WorkloadEndpoint),
    "blocks": (keys.BLOCK_PREFIX_V4, Block),
    "felix": (keys.resource_prefix(FelixConfiguration.PLURAL), FelixConfiguration),
}
POLICY_SOURCES: dict[str, Any] = {
    "networkpolicies": NetworkPolicy,
    "globalnetworkpolicies": GlobalNetworkPolicy,
    "profiles": Profile,
    "networksets": NetworkSet,
    "globalnetworksets": GlobalNetworkSet,
    "hostendpoints": HostEndpoint,
    "tiers": Tier,
}
SOURCES.update({name: (keys.resource_prefix(cls.PLURAL), cls) for name, cls in POLICY_SOURCES.items()})


def _parse(cls: Any, kv: KeyValue) -> Any:
    data = json.loads(kv.value)
    if isinstance(cls, type) and issubclass(cls, Resource):
        return cls.from_json(data, copy=False)  # nothing else holds the parsed JSON: no deep copy
    return cls.from_json(data)


class _WatchCollector(Collector):
    """Watch streams etcd accepted for this process, by prefix (the client counts them
    as they open; a dropped stream resumed counts again), and subscribers per prefix."""

    def __init__(self, client: EtcdClient, syncer: Syncer) -> None:
        self.client = client
        self.syncer = syncer

    def collect(self) -> Iterator[Metric]:
        opened = CounterMetricFamily("pycalico_agent_watch_streams_opened", "Watch streams opened, by prefix",
                                     labels=["prefix"])
        for prefix, count in sorted(self.client.watches_opened.items()):
            opened.add_metric([prefix], count)
        yield opened
        subscribers = GaugeMetricFamily("pycalico_agent_watch_subscribers", "Subscribers of each watched prefix",
                                        labels=["prefix"])
        for prefix, stream in sorted(self.syncer.streams.items()):
            subscribers.add_metric([prefix], stream.subscribers)
        yield subscribers


class Agent:
    def __init__(self, settings: AgentSettings, client: EtcdClient) -> None:
        self.settings = settings
        self.client = client
        self.store = ResourceStore(client)
        self.health = Health()
        self.metrics = Metrics()
        self.dataplane = Dataplane(settings.route_protocol, settings.handover_timeout)
        self.nat = NatOutgoing(settings.iptables_backend)
        self.policy: PolicyEngine | None = None
        self._host_ifaces: dict[str, tuple[str, ...]] | None = None
        self._unroutable: dict[str, str] = {}
        self.policy_metrics = PolicyMetrics(self.metrics.registry, lambda: self.policy)
        self.cache: dict[str, dict[str, Any]] = {name: {} for name in SOURCES}
        self.revisions: dict[str, int] = {name: 0 for name in SOURCES}
        self._lock = threading.Lock()
        self._policy_apply_lock = threading.Lock()
        # set by the early apply: the reconcile loop's first full pass need not read back the kernel
        self._policy_kernel_just_written = False
        self.dirty = threading.Event()
        self.stop_event = threading.Event()
        self.syncer = Syncer(client, name="agent")  # one stream per prefix, shared with the CNI fast path
        self.metrics.registry.register(_WatchCollector(client, self.syncer))
        self.watchers: list[TypedCache[Any]] = []
        self.typed: dict[str, TypedCache[Any]] = {}
        self.lease: LeaseKeeper | None = None
        self.started = time.time()
        self.first_apply_done = False
        self.parent = "eth0"
        self.host_mtu = 1500
        self.pod_mtu = 0
        self.felix = FelixParams()
        self._tunnel_fingerprint = ""
        self.ipam: Any = None
        self.cni_server: Any = None

    # ---- startup ------------------------------------------------------------------------
    def _ipam(self) -> Any:
        if self.ipam is None:
            from pycalico.ipam import IPAM  # the lead's module; imported late so a missing one fails clearly

            self.ipam = IPAM(self.client, lock_dir=str(self.settings.run_dir))
        return self.ipam

    def run_startup(self) -> None:
        s = self.settings
        startup.ensure_cluster_information(self.store, s)  # a datastore of another cluster: refused first
        ifaces = autodetect.interfaces()
        existing = self.store.get(Node, s.nodename)
        address = startup.determine_address(s, existing, ifaces)
        if address is None:
            raise startup.StartupError(f"no IPv4 address found with {s.autodetection_method!r}")
        startup.ensure_default_pool(self.store, s)  # while the Node list (for the check below) arrives
        if (existing is None or existing.ip != str(address.ip)) and \
                os.environ.get("DISABLE_NODE_IP_CHECK", "").lower() != "true":
            try:
                startup.check_address_unique(self.synced_nodes(), s, address)
            except startup.StartupError as exc:
                if s.ip and s.ip.lower() not in ("autodetect", "none"):
                    raise  # an explicit IP that another node has: calico-node refuses too
                log.warning("%s (autodetected; continuing, as calico-node does)", exc)
        found = autodetect.find_interface(ifaces, address.ip)
        if found:
            self.parent = found[0].name
        self.host_mtu = autodetect.host_mtu(ifaces)
        startup.register_node(self.store, s, address)
        startup.ensure_tunnel_addresses(self.store, self._ipam(), s.nodename)
        mtu = startup.write_mtu(s, self.store.list(IPPool), ifaces)
        self.pod_mtu = mtu
        startup.write_file(s.nodename_file, s.nodename + "\n")
        log.info("node %s registered at %s (uplink %s, pod MTU %d)", s.nodename, address, self.parent, mtu)

    # ---- watch cache ----------------------------------------------------------------------
    def _applied(self, name: str, revision: int) -> None:
        """Under ``self._lock``, with the cache at ``revision``: what the policy gauge reports."""
        self.revisions[name] = max(self.revisions[name], revision)

    def start_watchers(self) -> None:
        """One typed cache per source on the process's syncer (shared with the CNI fast path)."""
        for name, (prefix, cls) in SOURCES.items():
            typed: TypedCache[Any] = TypedCache(
                functools.partial(_parse, cls), items=self.cache[name], lock=self._lock,
                on_applied=functools.partial(self._applied, name), on_change=self.dirty.set)
            self.watchers.append(typed)
            self.typed[name] = typed
            self.syncer.subscribe(prefix, typed)

    def synced_nodes(self, timeout: float = 10.0) -> list[Node]:
        """Every Node, from the node cache once it holds the first full list."""
        if not self.typed["nodes"].synced.wait(timeout):
            raise DatastoreError(f"the Node list has not arrived within {timeout:.0f} s")
        with self._lock:
            return list(self.cache["nodes"].values())

    def synced(self) -> bool:
        return all(w.synced.is_set() for w in self.watchers)

    # ---- reconcile ------------------------------------------------------------------------
    def felix_params(self) -> FelixParams:
        with self._lock:
            configs = {c.name: c.spec for c in self.cache["felix"].values()}
        return FelixParams.merge(os.environ, configs.get(f"node.{self.settings.nodename}", {}),
                                 configs.get("default", {}))

    def policy_params(self) -> PolicyParams:
        with self._lock:
            configs = {c.name: c.spec for c in self.cache["felix"].values()}
        return PolicyParams.merge(os.environ, configs.get(f"node.{self.settings.nodename}", {}),
                                  configs.get("default", {}))

    def host_interfaces(self, refresh: bool) -> dict[str, tuple[str, ...]]:
        """This host's interfaces and IPv4 addresses, for HostEndpoints named by ``expectedIPs``:
        read at the first apply and on every full resync (a policy change reuses them)."""
        if refresh or self._host_ifaces is None:
            try:
                self._host_ifaces = {i.name: tuple(str(a.ip) for a in i.addresses) for i in autodetect.interfaces()}
            except (OSError, ValueError) as exc:
                log.warning("policy: could not read the host's interfaces: %s", exc)
                self._host_ifaces = self._host_ifaces or {}
        return self._host_ifaces

    def policy_snapshot(self, nodes: dict[str, Node], pools: list[IPPool],
                        full: bool = False) -> tuple[PolicyInputs, dict[str, int]]:
        vxlan = any(p.vxlan_mode != "Never" for p in pools)
        tunnel_hosts = tuple(sorted(f"{n.ip}/32" for n in nodes.values() if n.ip)) if vxlan else ()
        with self._lock:
            c = self.cache
            inputs = PolicyInputs(
                weps=dict(c["weps"]), network_sets=dict(c["networksets"]),
                global_network_sets=dict(c["globalnetworksets"]), host_endpoints=dict(c["hostendpoints"]),
                network_policies=dict(c["networkpolicies"]), global_network_policies=dict(c["globalnetworkpolicies"]),
                profiles=dict(c["profiles"]), tiers=dict(c["tiers"]), tunnel_hosts=tunnel_hosts, vxlan=vxlan)
            revisions = dict(self.revisions)
        inputs.params = self.policy_params()
        if inputs.host_endpoints:
            inputs.host_interfaces = self.host_interfaces(full)
        return inputs, revisions

    def _policy_engine(self) -> PolicyEngine:
        if self.policy is None:
            backend = self.nat.backend or detect_backend(self.settings.iptables_backend)
            self.nat.backend = backend
            self.policy = PolicyEngine(self.settings.nodename, backend)
        return self.policy

    def ensure_fail_closed(self) -> None:
        """Before any dataplane change: no workload interface is reachable until its policy is programmed."""
        try:
            self._policy_engine().ensure_fail_closed(PolicyParams.merge(os.environ))
        except Exception as exc:  # noqa: BLE001 - keep starting; the first apply retries
            log.error("policy: could not install the fail-closed chains: %s", exc)

    def start_early_policy(self) -> None:
        """Policy does not wait for startup (node registration, tunnel addresses) or the route
        caches. Once the policy kinds are listed, while the (much longer) endpoint list still
        arrives, the engine writes the chains of the policies that apply to the local endpoints
        seen so far, so that iptables-restore runs beside the list instead of after it; once
        the endpoints are listed, it makes the first complete apply at once."""
        needed = [self.typed[name] for name in (*POLICY_SOURCES, "felix")]

        def wait_for(caches: list[TypedCache[Any]]) -> bool:
            for typed in caches:
                while not typed.synced.wait(0.02):
                    if self.stop_event.is_set():
                        return False
            return True

        def run() -> None:
            if not wait_for(needed):
                return
            # rounds until the endpoints are listed: each writes what the endpoints seen meanwhile need
            while not self.typed["weps"].synced.is_set() and not self.stop_event.is_set():
                inputs, _ = self.policy_snapshot({}, [])
                if self.typed["weps"].synced.is_set():
                    break  # listed meanwhile: the complete apply takes it from here
                try:
                    stats = self._policy_engine().prewrite(inputs)
                except Exception:  # noqa: BLE001 - an optimisation: the complete apply writes it all anyway
                    log.exception("policy: prewrite failed")
                    break
                if stats.errors or self._policy_engine().model is not None:
                    break
                if stats.changed:
                    log.info("policy: %d chains prewritten, %d set changes in %.1f ms while endpoints are listed",
                             stats.chains_written, stats.set_changes, stats.seconds * 1000)
                else:
                    self.stop_event.wait(0.02)
            # tunnel_hosts come from the nodes and pools; an error is retried by the reconcile loop
            if not wait_for([self.typed["weps"], self.typed["nodes"], self.typed["pools"]]):
                return
            with self._lock:
                nodes = {n.name: n for n in self.cache["nodes"].values()}
                pools = list(self.cache["pools"].values())
            try:
                errors = self.apply_policy(nodes, pools, full=False)
                self._policy_kernel_just_written = not errors
            except Exception:  # noqa: BLE001 - the reconcile loop applies it again
                log.exception("policy: the early complete apply failed")
                return
            if errors:
                log.warning("policy: the early complete apply failed: %s", "; ".join(errors[:5]))

        threading.Thread(target=run, name="early policy", daemon=True).start()

    def apply_policy(self, nodes: dict[str, Node], pools: list[IPPool], full: bool) -> list[str]:
        # one at a time from snapshot to kernel: the early apply and the reconcile loop's must not
        # overtake each other (an older snapshot written after a newer one)
        with self._policy_apply_lock:
            return self._apply_policy(nodes, pools, full)

    def _apply_policy(self, nodes: dict[str, Node], pools: list[IPPool], full: bool) -> list[str]:
        if full and self._policy_kernel_just_written:
            full = False
            self._policy_kernel_just_written = False
        engine = self._policy_engine()
        inputs, revisions = self.policy_snapshot(nodes, pools, full)
        stats = engine.apply(inputs, full=full)
        self.policy_metrics.apply_time.observe(stats.seconds)
        if stats.errors:
            return stats.errors
        for name, revision in revisions.items():
            self.policy_metrics.applied_revision.labels(name).set(revision)
        if stats.changed:
            log.info("policy: %d chains written, %d deleted, %d set changes in %.1f ms",
                     stats.chains_written, stats.chains_deleted, stats.set_changes, stats.seconds * 1000)
        return []

    def snapshot(self) -> tuple[dict[str, Node], list[IPPool], list[Block], list[WorkloadEndpoint]]:
        with self._lock:
            nodes = {n.name: n for n in self.cache["nodes"].values()}
            pools = list(self.cache["pools"].values())
            blocks = list(self.cache["blocks"].values())
            weps = [w for w in self.cache["weps"].values() if w.node == self.settings.nodename]
        return nodes, pools, blocks, weps

    def _maybe_reallocate_tunnels(self, nodes: dict[str, Node], pools: list[IPPool]) -> None:
        me = nodes.get(self.settings.nodename)
        basis = json.dumps([sorted((p.name, p.cidr, p.ipip_mode, p.vxlan_mode, p.disabled, p.node_selector)
                                   for p in pools),
                            me.ipip_tunnel_addr if me else "", me.vxlan_tunnel_addr if me else "",
                            sorted(me.labels.items()) if me else []])
        fingerprint = hashlib.sha1(basis.encode()).hexdigest()
        if fingerprint == self._tunnel_fingerprint or me is None:
            return
        try:
            startup.ensure_tunnel_addresses(self.store, self._ipam(), self.settings.nodename,
                                            prepare=functools.partial(self._prepare_tunnel, me))
            self._tunnel_fingerprint = fingerprint
        except (PycalicoError, DatastoreError) as exc:
            self.metrics.etcd_errors.inc()
            log.warning("tunnel address reconcile failed: %s", exc)

    def _prepare_tunnel(self, me: Node, kind: str, address: str) -> None:
        """A new tunnel address goes on this node's device before its Node publishes it: peers
        switch their routes to it as soon as they see it, and a device not up yet (or without its
        MAC) drops what they send (1.1 s of lost pings on a live IPIP -> VXLAN switch, measured in
        make test-vm). The next apply finds the device as it wants it."""
        felix = self.felix
        try:
            if kind == "vxlan":
                device = vxlan_device(me, address, felix, self.parent, self.host_mtu)
                if device is not None:
                    self.dataplane.ensure_vxlan(device, ApplyStats())
            elif kind == "ipip" and self.dataplane.ipip_supported():
                self.dataplane.ensure_ipip(IpipDevice(address, felix.ipip_device_mtu(self.host_mtu)), ApplyStats())
        except DataplaneError as exc:
            log.warning("%s device not prepared with %s before the Node update: %s", kind, address, exc)

    def reconcile_once(self, full: bool = True) -> None:
        started = time.monotonic()
        nodes, pools, blocks, weps = self.snapshot()
        felix = self.felix = self.felix_params()
        desired = compute(self.settings.nodename, nodes, pools, blocks, weps, parent=self.parent,
                          host_mtu=self.host_mtu, backend=self.settings.backend, felix=felix)
        mtu = pod_mtu(self.host_mtu, pools, self.settings.mtu, felix)
        if mtu != self.pod_mtu:  # a pool's encapsulation changed: new pods get the new MTU
            startup.write_file(self.settings.mtu_file, f"{mtu}\n")
            log.info("pod MTU now %d", mtu)
            self.pod_mtu = mtu
        if desired.unroutable != self._unroutable:  # said once per change, not on every resync
            for reason in sorted(set(desired.unroutable.values()) - set(self._unroutable.values())):
                log.error("no route: %s", reason)
            self._unroutable = dict(desired.unroutable)
        policy_errors = self.apply_policy(nodes, pools, full)
        stats = self.dataplane.apply(desired, full=full)
        stats.errors.extend(policy_errors)
        # After the apply: what it writes reaches this snapshot's compute only through the Node
        # watch anyway, and the first apply at start need not wait for it.
        self._maybe_reallocate_tunnels(nodes, pools)
        nat_ok = True
        try:
            self.nat.apply(desired.nat_pools, desired.all_pools, check_drift=full)
        except (NatError, OSError) as exc:
            nat_ok = False
            stats.errors.append(str(exc))
        elapsed = time.monotonic() - started
        self.metrics.resync_seconds.observe(elapsed)
        self.metrics.routes_programmed.set(self.dataplane.routes_programmed)
        self.metrics.route_changes.inc(stats.routes_added + stats.routes_removed)
        self.metrics.last_resync.set(time.time())
        if stats.errors:
            self.metrics.dataplane_errors.inc(len(stats.errors))
            log.warning("dataplane errors: %s", "; ".join(stats.errors[:5]))
        if stats.changes:
            log.info("dataplane: +%d -%d routes, %d neigh, %d fdb, %d device changes in %.1f ms",
                     stats.routes_added, stats.routes_removed, stats.neigh_changed, stats.fdb_changed,
                     stats.devices_changed, elapsed * 1000)
        if not stats.errors and nat_ok and self.synced() and not self.first_apply_done:
            self.first_apply_done = True
            log.info("in sync: first dataplane apply done (%d routes)", self.dataplane.routes_programmed)
            sd_notify("READY=1\nSTATUS=in sync")
        detail = f"{self.dataplane.routes_programmed} routes"
        if desired.unroutable:
            detail += f"; unroutable nodes: {', '.join(sorted(desired.unroutable))}"
        self.health.report("dataplane", ready=self.first_apply_done and self.synced(), detail=detail)

    def reconcile_loop(self) -> None:
        next_full = 0.0
        while not self.stop_event.is_set():
            timeout = max(0.0, next_full - time.monotonic())
            self.dirty.wait(timeout)
            if self.stop_event.is_set():
                return
            if not self.synced():
                self.dirty.clear()
                self.dirty.wait(0.05)  # a cache that completes its list sets it: no wait after the last
                continue
            # batch a burst of watch events into one apply
            self.stop_event.wait(0.005)
            self.dirty.clear()
            full = time.monotonic() >= next_full
            try:
                self.reconcile_once(full)
            except Exception:
                log.exception("reconcile failed")
                self.dataplane.forget()
                self.dirty.set()
                self.stop_event.wait(1.0)
            if full:
                interval = self.felix.route_refresh_interval or self.settings.resync_interval
                next_full = time.monotonic() + interval
            if self.dataplane.holding:  # routes kept until BIRD's are in the kernel: look again soon
                next_full = min(next_full, time.monotonic() + 0.5)

    # ---- status key ---------------------------------------------------------------------------
    def _put_status(self, lease_id: int) -> None:
        key = keys.felix_status_key(self.settings.nodename)
        self.client.put(key, status_json(self.started, not self.first_apply_done), lease=lease_id)

    def status_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                if self.lease is None:
                    self.lease = LeaseKeeper(self.client, self.settings.status_ttl, self._put_status).start()
                else:
                    self._put_status(self.lease.lease_id)
                self.health.report("datastore", ready=True)
            except DatastoreError as exc:
                self.metrics.etcd_errors.inc()
                self.health.report("datastore", ready=True, detail=f"status write failed: {exc}")
                log.warning("status write failed: %s", exc)
                self.stop_event.wait(2.0)
                continue
            self.stop_event.wait(self.settings.status_interval)

    # ---- CNI fast path -----------------------------------------------------------------------
    def start_cni_server(self) -> None:
        """The CNI plugin's socket server (``pycalico.cni.server.start_server``) on
        ``$PYCALICO_RUN_DIR/cni.sock``; the plugin falls back to in-process when it is absent."""
        if not self.settings.cni_server:
            return
        try:
            from pycalico.cni.server import start_server
        except ImportError:
            log.info("CNI fast path not installed; the plugin runs in-process")
            return
        try:
            self.cni_server = start_server(str(self.settings.run_dir / "cni.sock"), syncer=self.syncer)
            self._count_cni_requests(self.cni_server)
            log.info("CNI fast path listening on %s", self.settings.run_dir / "cni.sock")
        except Exception:
            log.exception("CNI fast path failed to start; the plugin runs in-process")

    def _count_cni_requests(self, server: Any) -> None:
        """Wrap the server's ``handle(role, env, stdin)`` to count requests by verb and result."""
        inner = getattr(server, "handle", None)
        if inner is None:
            return
        counter = self.metrics.cni_requests

        def counted(role: str, env: dict[str, str], stdin: bytes) -> tuple[int, str]:
            code, out = inner(role, env, stdin)
            counter.labels(str(env.get("CNI_COMMAND", "")).upper()[:16], "ok" if code == 0 else "error").inc()
            return code, out

        server.handle = counted

    # ---- main ----------------------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        self.health.report("startup", ready=False, detail="starting")
        self.health.report("dataplane", ready=False, detail="not applied yet")
        # The caches fill while startup registers the node: startup's address check reads
        # the node cache instead of listing every Node a second time. The lists start first,
        # as they only read: nothing touches the dataplane before the fail-closed chains.
        self.start_watchers()
        self.ensure_fail_closed()
        self.health.serve(s.health_host, s.health_port)
        if s.metrics_port:
            self.metrics.serve(s.metrics_host, s.metrics_port)
        self.start_early_policy()
        delay = 0.5
        while not self.stop_event.is_set():
            try:
                self.run_startup()
                break
            except DatastoreError as exc:
                self.metrics.etcd_errors.inc()
                log.warning("startup: datastore unavailable (%s); retrying", exc)
            except (startup.StartupError, PycalicoError) as exc:
                log.error("startup failed: %s", exc)
                return 1
            self.stop_event.wait(delay)
            delay = min(delay * 2, 5.0)
        self.health.report("startup", ready=True)
        threading.Thread(target=self.status_loop, name="status", daemon=True).start()
        start_watchdog(lambda: not self.stop_event.is_set(), self.stop_event)
        self.start_cni_server()
        self.reconcile_loop()
        return 0

    def stop(self) -> None:
        self.stop_event.set()
        self.dirty.set()
        if self.cni_server is not None:
            try:
                self.cni_server.stop()
            except Exception:
                log.exception("stopping the CNI server")
        self.syncer.stop(1.0)
        if self.lease is not None:
            self.lease.stop(revoke=True)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = AgentSettings.from_env()
        client = DatastoreSettings.from_env().client()
    except PycalicoError as exc:
        log.error("configuration: %s", exc)
        return 2
    agent = Agent(settings, client)

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: stopping (routes stay in place)", signum)
        agent.stop_event.set()
        agent.dirty.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rc = agent.run()
    agent.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
