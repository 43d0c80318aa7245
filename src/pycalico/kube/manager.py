"""Runs the enabled controllers: one informer per Kubernetes kind they need, events dispatched
to them, and a reconciler that runs every controller once all informers have listed, again
after each re-list, every ``reconciler_period`` seconds, and soon after a failed write."""

from __future__ import annotations

import logging
import threading
import time

from pycalico.ipam import IPAM
from pycalico.kube.api import KubeApi, Obj
from pycalico.kube.controllers import (
    Controller,
    IpamGarbageCollector,
    NodeController,
    PodController,
    namespace_controller,
    policy_controller,
    service_account_controller,
)
from pycalico.kube.informer import Informer, Key
from pycalico.kube.metrics import Metrics
from pycalico.model import ResourceStore

log = logging.getLogger(__name__)

RETRY_DIRTY = 1.0


class Manager:
    def __init__(self, api: KubeApi, store: ResourceStore, ipam: IPAM, metrics: Metrics, controllers: tuple[str, ...],
                 *, reconciler_period: float = 300.0, leak_grace_period: float = 900.0,
                 gc_period: float | None = None, watch_timeout: int = 300) -> None:
        self.api, self.metrics = api, metrics
        self.reconciler_period = reconciler_period
        self.controllers: list[Controller] = []
        makers = {"policy": lambda: policy_controller(store), "namespace": lambda: namespace_controller(store),
                  "serviceaccount": lambda: service_account_controller(store),
                  "workloadendpoint": lambda: PodController(store)}
        for name in controllers:
            if name in makers:
                self.controllers.append(makers[name]())
        if "node" in controllers:
            self.controllers.append(NodeController(store, ipam, api))
            self.gc = IpamGarbageCollector(store, ipam, api, metrics, grace=leak_grace_period)
            self.controllers.append(self.gc)
        # Calico scans IPAM every leakGracePeriod/2; never slower than the reconciler.
        self.gc_period = gc_period if gc_period is not None else max(1.0, min(leak_grace_period / 2,
                                                                               reconciler_period or 300.0))
        self.informers: dict[str, Informer] = {}
        for plural in sorted({k for c in self.controllers for k in c.kinds}):
            self.informers[plural] = Informer(api, plural, self._dispatcher(plural), watch_timeout=watch_timeout)
        for controller in self.controllers:
            controller.informers = {k: self.informers[k] for k in controller.kinds}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._reconcile_loop, name="reconciler", daemon=True)
        self._lists_seen: dict[str, int] = {}

    def _dispatcher(self, plural: str):  # type: ignore[no-untyped-def]
        def dispatch(key: Key, old: Obj | None, new: Obj | None) -> None:
            if not self.informers[plural].synced.is_set():
                return  # the first list only fills the cache; the first reconcile writes
            for controller in self.controllers:
                if plural in controller.kinds:
                    controller.on_change(plural, key, old, new)
            if any(c.dirty for c in self.controllers):
                self._wake.set()
        return dispatch

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values())

    def start(self) -> Manager:
        for informer in self.informers.values():
            informer.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for informer in self.informers.values():
            informer.request_stop()
        for informer in self.informers.values():
            informer.stop()
        self._thread.join(10)
        for controller in self.controllers:
            controller.stop()

    def alive(self) -> bool:
        return self._thread.is_alive() and all(i._thread.is_alive() for i in self.informers.values())

    def reconcile_all(self) -> bool:
        ok = True
        for controller in self.controllers:
            if controller.run_reconcile():
                self.metrics.reconciles.labels(controller=controller.name).inc()
            else:
                ok = False
        return ok

    def _reconcile_loop(self) -> None:
        while not self._stop.is_set() and not self.synced:
            self._stop.wait(0.1)
        last_full = 0.0
        last_gc = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            lists = {p: i.lists for p, i in self.informers.items()}
            relisted = lists != self._lists_seen
            periodic = self.reconciler_period > 0 and now - last_full >= self.reconciler_period
            if last_full == 0.0 or relisted or periodic:
                self._lists_seen = lists
                for plural, count in lists.items():
                    self.metrics.relists.labels(kind=plural).set(count)
                self.reconcile_all()
                last_full = time.monotonic()
                last_gc = last_full
            else:
                for controller in self.controllers:
                    due_gc = controller is getattr(self, "gc", None) and now - last_gc >= self.gc_period
                    if controller.dirty or due_gc:
                        controller.run_reconcile()
                        if due_gc:
                            last_gc = time.monotonic()
            self._wake.wait(RETRY_DIRTY if any(c.dirty for c in self.controllers) else min(
                self.gc_period, self.reconciler_period or self.gc_period, 5.0))
            self._wake.clear()
