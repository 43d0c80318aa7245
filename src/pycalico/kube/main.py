"""pycalico-kube-controllers: Calico's kube-controllers for the etcd datastore.

Waits to become the active instance (an etcd lease election), makes sure the tiers exist,
then runs the enabled controllers until stopped or until it loses the election (exit code 1,
so systemd restarts it as a standby). Health and metrics are served from the start."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from pycalico.errors import PycalicoError
from pycalico.ipam import IPAM
from pycalico.kube.election import LeaderElection
from pycalico.kube.metrics import Metrics, StatusServer
from pycalico.kube.settings import Settings
from pycalico.model import ResourceStore
from pycalico.model.store import ensure_default_tiers

log = logging.getLogger("pycalico.kube")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from pycalico.kube.api import KubeApi
        from pycalico.kube.manager import Manager
    except ImportError as exc:
        log.error("the Kubernetes client is missing (%s): install pycalico's kube extra, pip install 'pycalico[kube]'",
                  exc)
        return 2
    try:
        settings = Settings.from_env()
        api = KubeApi(settings.kubeconfig)
    except (PycalicoError, Exception) as exc:  # lightkube raises its own ConfigError
        log.error("configuration: %s", exc)
        return 2
    client = settings.datastore.client()
    store = ResourceStore(client)
    metrics = Metrics()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    election = LeaderElection(client, settings.identity, ttl=settings.leader_ttl)
    manager: Manager | None = None

    def ready() -> bool:
        return manager is None or manager.synced  # a standby is ready to take over

    status = StatusServer(metrics, settings.metrics_host, settings.metrics_port,
                          live=lambda: manager is None or manager.alive(), ready=ready).start()
    log.info("pycalico-kube-controllers %s: controllers %s, standby until elected", settings.identity,
             ",".join(settings.controllers))
    try:
        if not election.campaign(stop):
            return 0
        metrics.is_leader.set(1)
        while not stop.is_set():
            try:
                ensure_default_tiers(store)
                break
            except PycalicoError as exc:
                log.warning("ensuring tiers: %s", exc)
                stop.wait(2)
        manager = Manager(api, store, IPAM(client), metrics, settings.controllers,
                          reconciler_period=settings.reconciler_period,
                          leak_grace_period=settings.leak_grace_period).start()
        while not stop.wait(0.5):
            if election.lost.is_set():
                log.error("lost the leader election: stopping")
                return 1
        return 0
    finally:
        metrics.is_leader.set(0)
        if manager is not None:
            manager.stop()
        election.resign()
        status.stop()
        api.close()
        client.close()


if __name__ == "__main__":
    sys.exit(main())
