"""List-then-watch with resume after a dropped stream and re-list after compaction."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from pycalico.datastore.etcd import EtcdClient, KeyValue, WatchEvent, WatchStream
from pycalico.errors import Compacted, DatastoreError

log = logging.getLogger(__name__)

SyncHandler = Callable[[list[KeyValue], int], None]
EventHandler = Callable[[list[WatchEvent]], None]
# (revision, pages): a snapshot to apply in chunks; every page must be consumed.
PagedSyncHandler = Callable[[int, Iterator[list[KeyValue]]], None]


class PrefixWatcher:
    """Keeps a consumer in sync with every key under ``prefix``.

    ``on_sync(kvs, revision)`` receives a full snapshot: at start, and again
    whenever the watch fell behind a compaction. ``on_events(events)`` receives
    every change after the snapshot, in order, none lost across dropped streams.

    The snapshot is read in pages at one revision (``EtcdClient.pages``). A consumer
    that can apply it in chunks passes ``on_sync_pages(revision, pages)`` instead of
    ``on_sync``, so the whole prefix is never held at once.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        on_sync: SyncHandler | None,
        on_events: EventHandler,
        *,
        on_sync_pages: PagedSyncHandler | None = None,
        retry_interval: float = 0.5,
        name: str = "watch",
    ) -> None:
        self.client = client
        self.prefix = prefix
        if (on_sync is None) == (on_sync_pages is None):
            raise ValueError("PrefixWatcher needs exactly one of on_sync and on_sync_pages")
        self.on_sync = on_sync
        self.on_sync_pages = on_sync_pages
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
        pages = self.client.pages(self.prefix)
        if self.on_sync_pages is not None:
            self.on_sync_pages(pages.revision, iter(pages))
        else:
            assert self.on_sync is not None
            self.on_sync([kv for page in pages for kv in page], pages.revision)
        self.revision = pages.revision
        self.resyncs += 1
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
