"""One active pycalico-kube-controllers at a time: the leader holds an etcd key on a lease.

Campaign: grant a lease, create the key on it only if absent (one transaction); on failure
revoke the lease and try again a moment later. The leader refreshes its lease every ttl/3;
when it dies the lease expires within ``ttl`` seconds, the key goes with it and a standby's
next attempt wins. A leader that cannot refresh its lease in time stops being leader
(``lost`` is set) and must stop writing: the process exits and systemd starts it as a standby.
"""

from __future__ import annotations

import logging
import threading
import time

from pycalico.datastore.etcd import EtcdClient
from pycalico.errors import DatastoreError, KeyExists

log = logging.getLogger(__name__)

LEADER_KEY = "/calico/kube-controllers/v1/leader"


class LeaderElection:
    def __init__(self, client: EtcdClient, identity: str, *, ttl: int = 5, retry: float = 1.0,
                 key: str = LEADER_KEY) -> None:
        self.client, self.identity, self.ttl, self.retry, self.key = client, identity, ttl, retry, key
        self.lease_id = 0
        self.leading = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def leader(self) -> str:
        """The identity of the current leader, "" if none."""
        kv = self.client.get(self.key)
        return kv.value if kv else ""

    def try_acquire(self) -> bool:
        lease = self.client.lease_grant(self.ttl)
        try:
            self.client.create(self.key, self.identity, lease=lease)
        except KeyExists:
            self.client.lease_revoke(lease)
            return False
        self.lease_id = lease
        self.leading.set()
        self._keeper = threading.Thread(target=self._keep, name="leader-lease", daemon=True)
        self._keeper.start()
        log.info("leader election: %s is now the active instance", self.identity)
        return True

    def campaign(self, stop: threading.Event) -> bool:
        """Block until leader (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            try:
                if self.try_acquire():
                    return True
            except DatastoreError as exc:
                log.warning("leader election: %s", exc)
            stop.wait(self.retry)
        return False

    def _keep(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.ttl / 3.0):
            try:
                if self.client.lease_keepalive(self.lease_id) > 0:
                    last_ok = time.monotonic()
                    continue
                log.error("leader election: the lease expired; no longer the active instance")
            except DatastoreError as exc:
                if time.monotonic() - last_ok < self.ttl * 2 / 3:
                    log.warning("leader election: keepalive failed (%s)", exc)
                    continue
                log.error("leader election: lease not refreshed in time (%s); no longer the active instance", exc)
            self.leading.clear()
            self.lost.set()
            return

    def resign(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join(5)
        if self.lease_id and self.leading.is_set():
            try:
                self.client.lease_revoke(self.lease_id)  # the key goes with the lease
            except DatastoreError:
                pass
        self.leading.clear()
