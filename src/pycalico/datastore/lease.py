"""A lease kept alive by a background thread, re-granted if it expires."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pycalico.datastore.etcd import EtcdClient
from pycalico.errors import DatastoreError

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Grants a lease of ``ttl`` seconds and refreshes it every ttl/3.

    When the lease is lost (expired while etcd was unreachable), a new one is
    granted and ``on_new_lease(lease_id)`` is called so the owner can re-put
    the keys that hung on the old lease.
    """

    def __init__(
        self,
        client: EtcdClient,
        ttl: int,
        on_new_lease: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.ttl = ttl
        self.on_new_lease = on_new_lease
        self.lease_id = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def start(self) -> LeaseKeeper:
        self._grant()
        self._thread.start()
        return self

    def _grant(self) -> None:
        self.lease_id = self.client.lease_grant(self.ttl)
        if self.on_new_lease is not None:
            self.on_new_lease(self.lease_id)

    def _run(self) -> None:
        interval = max(self.ttl / 3.0, 0.2)
        while not self._stop.wait(interval):
            try:
                if self.lease_id == 0 or self.client.lease_keepalive(self.lease_id) <= 0:
                    log.warning("lease %x expired; granting a new one", self.lease_id)
                    self._grant()
            except DatastoreError as exc:
                log.warning("lease keepalive failed: %s", exc)

    def stop(self, revoke: bool = True) -> None:
        self._stop.set()
        self._thread.join(5)
        if revoke and self.lease_id:
            try:
                self.client.lease_revoke(self.lease_id)
            except DatastoreError:
                pass
