"""The controllers of pycalico-kube-controllers (calico-kubernetes.md §3.2-3.8), etcd mode.

Each controller reacts to informer changes by writing the one Calico record concerned, and
``reconcile()`` compares everything it owns with the informer caches (by name prefix, as
Calico does): missing → create, different → update, without a Kubernetes source → delete.
A write that fails (etcd away) only marks the controller dirty: the manager reconciles it
again soon, so no event is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycalico.errors import ResourceExists
from pycalico.ipam import IPAM
from pycalico.kube import convert
from pycalico.kube.api import KubeApi, Obj
from pycalico.kube.informer import Informer, Key
from pycalico.kube.metrics import Metrics
from pycalico.lifecycle import remove_node
from pycalico.model import NetworkPolicy, Node, Profile, Resource, ResourceStore, WorkloadEndpoint, wep_name
from pycalico.model.resources import json_copy

log = logging.getLogger(__name__)


class Controller:
    name = ""
    kinds: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.dirty = False
        self.informers: dict[str, Informer] = {}
        self._lock = threading.Lock()  # events and reconciles of one controller never interleave

    def on_change(self, plural: str, key: Key, old: Obj | None, new: Obj | None) -> None:
        with self._lock:
            try:
                self.handle(plural, key, old, new)
            except Exception as exc:
                log.warning("%s controller: %s %s/%s not written yet (%s); will reconcile", self.name, plural,
                            *key, exc)
                self.dirty = True

    def run_reconcile(self) -> bool:
        with self._lock:
            try:
                self.reconcile()
                self.dirty = False
                return True
            except Exception as exc:
                log.warning("%s controller: reconcile failed (%s); retrying", self.name, exc)
                self.dirty = True
                return False

    def handle(self, plural: str, key: Key, old: Obj | None, new: Obj | None) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """End the controller's own threads (if it has any)."""

    def reconcile(self) -> None:
        raise NotImplementedError


def _defaulted(res: Resource) -> Resource:
    copy = res.copy()
    copy.apply_defaults()
    return copy


def write(store: ResourceStore, desired: Resource, current: Resource | None) -> bool:
    """Make etcd hold ``desired``'s spec (Calico compares and writes spec only); True if written."""
    if current is None:
        try:
            store.create(desired)  # just read as absent: one write, no second read
        except ResourceExists:
            store.apply(desired)
        return True
    if _defaulted(desired).spec == current.spec:
        return False
    updated = current.copy()
    updated.spec = json_copy(desired.spec)
    store.update(updated)
    return True


def write_all(store: ResourceStore, cls: type[Resource], desired: list[Resource]) -> int:
    """``write`` for many: one transaction creates them all when none exists yet (a burst
    of new policies); otherwise the values read in that round trip say what to update."""
    current = store.create_all(cls, desired)
    if not current:
        return len(desired)
    return sum(write(store, res, current.get(res.key())) for res in desired)


class MirrorController(Controller):
    """One Kubernetes kind ↔ the Calico records named with ``prefix`` (policies and profiles).

    Changes are written by ``WORKERS`` threads, so that etcd round trips overlap (1,000
    new policies arrive at once when a namespace's manifests are applied). A key is
    written by one worker at a time, from the informer's state when its turn comes
    (changes queued meanwhile fold into one write); a worker takes up to ``BATCH`` keys
    and creates them in one transaction when they are new; a reconcile waits for the
    writes in flight and holds new ones back until it is done."""

    WORKERS = 4
    BATCH = 50  # within etcd's default --max-txn-ops (128) for compares, puts and reads

    def __init__(self, name: str, plural: str, store: ResourceStore, cls: type[Resource], prefix: str,
                 converter: Callable[[Obj], Resource]) -> None:
        super().__init__()
        self.name, self.kinds = name, (plural,)
        self.plural, self.store, self.cls, self.prefix, self.converter = plural, store, cls, prefix, converter
        self.writes = 0
        self.deletes = 0
        self._work = threading.Condition()
        self._pending: dict[Key, None] = {}  # insertion-ordered set
        self._in_flight: set[Key] = set()
        self._reconciling = False
        self._stopped = False
        self._workers: list[threading.Thread] = []

    def on_change(self, plural: str, key: Key, old: Obj | None, new: Obj | None) -> None:
        with self._work:
            if not self._workers:
                self._workers = [threading.Thread(target=self._drain, name=f"{self.name}-writer-{i}", daemon=True)
                                 for i in range(self.WORKERS)]
                for worker in self._workers:
                    worker.start()
            self._pending[key] = None
            self._work.notify()

    def _take(self) -> list[Key]:
        """Under ``self._work``: up to BATCH queued keys no worker holds, unless a reconcile runs."""
        if self._reconciling:
            return []
        taken: list[Key] = []
        for key in self._pending:
            if key not in self._in_flight:
                taken.append(key)
                if len(taken) == self.BATCH:
                    break
        return taken

    def _drain(self) -> None:
        while True:
            with self._work:
                keys = self._take()
                while not self._stopped and not keys:
                    self._work.wait()
                    keys = self._take()
                if self._stopped:
                    return
                for key in keys:
                    del self._pending[key]
                self._in_flight.update(keys)
            try:
                self._write(keys)
            except Exception as exc:
                log.warning("%s controller: %d %s changes not written yet (%s); will reconcile", self.name,
                            len(keys), self.plural, exc)
                self.dirty = True
            finally:
                with self._work:
                    self._in_flight.difference_update(keys)
                    self._work.notify_all()

    def _write(self, keys: list[Key]) -> None:
        informer = self.informers[self.plural]
        current = {key: informer.get(key) for key in keys}
        present = {key: obj for key, obj in current.items() if obj is not None}
        for key in current.keys() - present.keys():
            self.handle(self.plural, key, None, None)
        if present:
            written = write_all(self.store, self.cls, [self.converter(obj) for obj in present.values()])
            with self._lock:
                self.writes += written

    def run_reconcile(self) -> bool:
        with self._work:
            self._reconciling = True
            while self._in_flight:
                self._work.wait()
            self._pending.clear()  # the reconcile reads every key's current state
        try:
            return super().run_reconcile()
        finally:
            with self._work:
                self._reconciling = False
                self._work.notify_all()

    def stop(self) -> None:
        with self._work:
            self._stopped = True
            self._work.notify_all()
        for worker in self._workers:
            worker.join(5)

    def _calico_name(self, key: Key) -> tuple[str, str | None]:
        probe = self.converter({"metadata": {"name": key[1], "namespace": key[0] or None}})
        return probe.name, probe.namespace

    def handle(self, plural: str, key: Key, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            name, namespace = self._calico_name(key)
            if self.store.delete(self.cls, name, namespace):
                with self._lock:
                    self.deletes += 1
            return
        desired = self.converter(new)
        if write(self.store, desired, self.store.get(self.cls, desired.name, desired.namespace)):
            with self._lock:
                self.writes += 1

    def reconcile(self) -> None:
        wanted = {(d.namespace, d.name): d for d in (self.converter(o) for o in self.informers[self.plural]
                                                     .items().values())}
        current = {(c.namespace, c.name): c for c in self.store.list(self.cls) if c.name.startswith(self.prefix)}
        for key, desired in wanted.items():
            if write(self.store, desired, current.get(key)):
                self.writes += 1
        for (namespace, name), stale in current.items():
            if (namespace, name) not in wanted:
                log.info("%s controller: deleting %s (no Kubernetes source)", self.name, stale)
                if self.store.delete(self.cls, name, namespace):
                    self.deletes += 1


def policy_controller(store: ResourceStore) -> MirrorController:
    return MirrorController("policy", "networkpolicies", store, NetworkPolicy, convert.KNP_PREFIX,
                            convert.network_policy)


def namespace_controller(store: ResourceStore) -> MirrorController:
    return MirrorController("namespace", "namespaces", store, Profile, convert.NAMESPACE_PROFILE_PREFIX,
                            convert.namespace_to_profile)


def service_account_controller(store: ResourceStore) -> MirrorController:
    return MirrorController("serviceaccount", "serviceaccounts", store, Profile,
                            convert.SERVICE_ACCOUNT_PROFILE_PREFIX, convert.service_account_to_profile)


class PodController(Controller):
    """Keeps labels and serviceAccountName of existing k8s WorkloadEndpoints equal to their pod's.
    It never creates or deletes an endpoint (the CNI plugin does)."""

    name = "workloadendpoint"
    kinds = ("pods",)

    def __init__(self, store: ResourceStore) -> None:
        super().__init__()
        self.store = store
        self.updates = 0

    def _endpoints_of(self, namespace: str, pod: str, node: str) -> list[WorkloadEndpoint]:
        found = self.store.get(WorkloadEndpoint, wep_name(node, "k8s", pod, "eth0"), namespace)
        if found is not None:
            return [found]
        return [w for w in self.store.list(WorkloadEndpoint, namespace)
                if w.spec.get("orchestrator") == "k8s" and w.spec.get("pod") == pod]

    def _sync(self, pod: Obj, wep: WorkloadEndpoint) -> None:
        labels = convert.pod_endpoint_labels(pod)
        account = convert.pod_service_account(pod)
        if wep.labels == labels and str(wep.spec.get("serviceAccountName") or "") == account:
            return
        updated: WorkloadEndpoint = wep.copy()  # type: ignore[assignment]
        updated.metadata["labels"] = labels
        if account:
            updated.spec["serviceAccountName"] = account
        self.store.update(updated)
        self.updates += 1

    def handle(self, plural: str, key: Key, old: Obj | None, new: Obj | None) -> None:
        if new is None or not convert.pod_wants_endpoint(new):
            return
        for wep in self._endpoints_of(key[0], key[1], str(new["spec"]["nodeName"])):
            self._sync(new, wep)

    def reconcile(self) -> None:
        pods = self.informers["pods"]
        for wep in self.store.list(WorkloadEndpoint):
            if wep.spec.get("orchestrator") != "k8s":
                continue
            pod = pods.get((str(wep.namespace), str(wep.spec.get("pod") or "")))
            if pod is not None and convert.pod_wants_endpoint(pod):
                self._sync(pod, wep)


def k8s_node_name(node: Node) -> str:
    """The Kubernetes node a Calico Node stands for (its k8s orchRef), or "" if none."""
    for ref in node.spec.get("orchRefs") or []:
        if ref.get("orchestrator") == "k8s" and ref.get("nodeName"):
            return str(ref["nodeName"])
    return ""


class NodeController(Controller):
    """A Kubernetes Node deleted → its Calico Node removed with the code del-node uses
    (``pycalico.lifecycle.remove_node``). Calico Nodes without a k8s orchRef are left alone."""

    name = "node"
    kinds = ("nodes",)

    def __init__(self, store: ResourceStore, ipam: IPAM, api: KubeApi) -> None:
        super().__init__()
        self.store, self.ipam, self.api = store, ipam, api
        self.removed: list[str] = []

    def handle(self, plural: str, key: Key, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            self.reconcile()

    def reconcile(self) -> None:
        present = {k[1] for k in self.informers["nodes"].items()}
        for node in self.store.list(Node):
            k8s_name = k8s_node_name(node)
            if not k8s_name or k8s_name in present:
                continue
            if self.api.get("nodes", k8s_name) is not None:  # the cache may lag: ask the server
                continue
            log.info("node controller: Kubernetes node %s is gone; removing Calico node %s", k8s_name, node.name)
            remove_node(self.store, self.ipam, node.name)
            self.removed.append(node.name)


@dataclass
class _Candidate:
    first_seen: float
    handle: str


class IpamGarbageCollector(Controller):
    """Releases addresses whose pod is gone (calico-kubernetes.md §3.8): at once when the pod's
    node is gone too, else once it stayed invalid for ``grace`` seconds, and only after a direct
    GET confirms the pod is really gone. Allocations without pod attributes are never touched."""

    name = "ipam-gc"
    kinds = ("pods", "nodes")

    def __init__(self, store: ResourceStore, ipam: IPAM, api: KubeApi, metrics: Metrics, *,
                 grace: float = 900.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.store, self.ipam, self.api, self.metrics = store, ipam, api, metrics
        self.grace, self.clock = grace, clock
        self._candidates: dict[str, _Candidate] = {}
        self.released: list[str] = []

    def handle(self, plural: str, key: Key, old: Obj | None, new: Obj | None) -> None:
        pass  # the periodic scan does the work; a deletion only starts a grace period

    def _pod_valid(self, pod: Obj | None, node: str, ip: str) -> bool:
        if pod is None:
            return False
        if str((pod.get("spec") or {}).get("nodeName") or "") not in ("", node):
            return False
        if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            return False
        ips = convert.pod_ips(pod)
        return not ips or ip in ips  # no IP reported yet counts as valid

    def reconcile(self) -> None:
        pods, nodes = self.informers["pods"], self.informers["nodes"]
        k8s_nodes = {k[1] for k in nodes.items()}
        calico_nodes = {n.name: k8s_node_name(n) or n.name for n in self.store.list(Node)}
        in_use: dict[str, int] = {}
        blocks: dict[str, int] = {}
        seen: set[str] = set()
        confirmed: dict[str, list[str]] = {}  # handle → confirmed leaked IPs
        handle_ips: dict[str, list[str]] = {}
        ip_node: dict[str, str] = {}
        now = self.clock()
        for block in self.ipam.blocks(4) + self.ipam.blocks(6):
            owner = block.host() or ""
            blocks[owner] = blocks.get(owner, 0) + 1
            for ordinal, attr in block.allocated():
                ip = str(block.address(ordinal))
                secondary: dict[str, Any] = attr.get("secondary") or {}
                node = str(secondary.get("node") or owner)
                in_use[node] = in_use.get(node, 0) + 1
                ip_node[ip] = node
                handle = str(attr.get("handle_id") or "")
                handle_ips.setdefault(handle, []).append(ip)
                namespace, pod_name = secondary.get("namespace"), secondary.get("pod")
                if not namespace or not pod_name:
                    continue  # tunnel addresses and non-Kubernetes workloads are never collected here
                k8s_node = calico_nodes.get(node, node)
                if self._pod_valid(pods.get((str(namespace), str(pod_name))), k8s_node, ip):
                    self._candidates.pop(ip, None)
                    continue
                seen.add(ip)
                candidate = self._candidates.setdefault(ip, _Candidate(now, handle))
                node_gone = k8s_node not in k8s_nodes
                if node_gone or now - candidate.first_seen >= self.grace:
                    # Confirm with the server itself: the cache can lag behind a new pod.
                    if self._pod_valid(self.api.get("pods", str(pod_name), str(namespace)), k8s_node, ip):
                        self._candidates.pop(ip, None)
                        seen.discard(ip)
                        continue
                    confirmed.setdefault(handle, []).append(ip)
        for ip in set(self._candidates) - seen:
            del self._candidates[ip]
        for handle, ips in confirmed.items():
            if handle and sorted(ips) == sorted(handle_ips.get(handle, [])):
                self.ipam.release_by_handle(handle)
            elif not handle:
                self.ipam.release_ips(ips)
            else:
                continue  # some address of this handle is still valid: release nothing of it
            for ip in ips:
                self._candidates.pop(ip, None)
                self.metrics.gc_reclamations.labels(node=ip_node.get(ip, "")).inc()
            self.released += ips
            log.info("ipam gc: released %s (handle %s): pod gone", ", ".join(ips), handle or "none")
        self.metrics.set_ipam(in_use, blocks, len(self._candidates))
