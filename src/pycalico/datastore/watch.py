"""List-then-watch with resume after a dropped stream and re-list after compaction."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pycalico.datastore.etcd import EtcdClient, KeyValue, WatchEvent, WatchStream
from pycalico.errors import Compacted, DatastoreError

log = logging.getLogger(__name__)

SyncHandler = Callable[[list[KeyValue], int], None]
EventHandler = Callable[[list[WatchEvent]], None]


class PrefixWatcher:
    """Keeps a consumer in sync with every key under ``prefix``.

    ``on_sync(kvs, revision)`` receives a full snapshot: at start, and again
    whenever the watch fell behind a compaction. ``on_events(events)`` receives
    every change after the snapshot, in order, none lost across dropped streams.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        on_sync: SyncHandler,
        on_events: EventHandler,
        *,
        retry_interval: float = 0.5,
        name: str = "watch",
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.on_sync = on_sync
        self.on_events = on_events
        self.retry_interval = retry_interval
        self.revision = 0
        self.resyncs = 0
        self.reconnects = 0
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._stream: WatchStream | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.synced = threading.Event()

    def start(self) -> PrefixWatcher:
        self._thread.start()
        return self

    def kick(self) -> None:
        """Skip the current retry wait and reconnect at once."""
        self._kick.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._kick.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        self._thread.join(timeout)

    def _resync(self) -> None:
        kvs, revision = self.client.list(self.prefix)
        self.revision = revision
        self.resyncs += 1
        self.on_sync(kvs, revision)
        self.synced.set()

    def _run(self) -> None:
        need_resync = True
        while not self._stop.is_set():
            try:
                if need_resync:
                    self._resync()
                    need_resync = False
                self._stream = self.client.watch_stream(self.prefix, self.revision + 1)
                for batch in self._stream:
                    self.on_events(batch)
                    self.revision = max(self.revision, max(e.kv.mod_revision for e in batch))
                if not self._stop.is_set():
                    self.reconnects += 1
                    log.info("watch on %s dropped at revision %d; resuming", self.prefix, self.revision)
            except Compacted:
                log.warning("watch on %s fell behind a compaction; re-listing", self.prefix)
                need_resync = True
                continue
            except DatastoreError as exc:
                log.warning("watch on %s: %s", self.prefix, exc)
            except Exception:  # a consumer bug must not kill the watch silently
                log.exception("watch on %s: handler failed", self.prefix)
                need_resync = True
            finally:
                self._stream = None
            self._kick.wait(self.retry_interval)
            self._kick.clear()
