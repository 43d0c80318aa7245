"""One list-then-watch stream per prefix per process, shared by its subscribers.

A ``Syncer`` owns, for each prefix anyone subscribed to, one ``PrefixStream``: a
paged list pinned at one revision, then a watch from the next revision, resumed
after a dropped stream and re-listed after a compaction. Every subscriber of the
prefix gets the snapshot (``on_sync_begin``, one ``on_sync_page`` per page,
``on_sync_end``) and then every event after it, in order.

A subscriber that joins a prefix already being watched gets a snapshot of its own
(read while delivery to the others waits, so nothing falls between the snapshot and
the events), and from then on only events newer than that snapshot: the stream is
not opened a second time.

``TypedCache`` is the common subscriber: it parses each value into a typed item
and keeps ``{key: item}``. The agent, confd and the CNI fast-path cache (inside the
agent, on the agent's syncer) all subscribe through here.

Generic on purpose: it knows prefixes and revisions, not Calico's JSON.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

from pycalico.datastore.etcd import EtcdClient, KeyValue, WatchEvent, WatchStream
from pycalico.errors import Compacted, DatastoreError, PycalicoError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Subscriber(Protocol):
    """What a stream delivers. A snapshot may be abandoned part-way (etcd went away
    between pages); the next one starts again with ``on_sync_begin``."""

    def on_sync_begin(self, prefix: str, revision: int) -> None: ...

    def on_sync_page(self, prefix: str, kvs: list[KeyValue]) -> None: ...

    def on_sync_end(self, prefix: str, revision: int) -> None: ...

    def on_events(self, prefix: str, events: list[WatchEvent]) -> None: ...


class Subscription:
    """One subscriber on one prefix. ``synced`` is set once it has had a snapshot."""

    def __init__(self, stream: PrefixStream, subscriber: Subscriber) -> None:
        self.stream = stream
        self.prefix = stream.prefix
        self.subscriber = subscriber
        self.floor = 0  # events at or below this revision are in its snapshot already
        self.synced = threading.Event()

    def cancel(self) -> None:
        self.stream.remove(self)


class _Resync(Exception):
    """A subscriber failed on an event: re-list so every subscriber starts clean."""


class PrefixStream:
    """List-then-watch of one prefix for every subscriber of it (see the module doc)."""

    def __init__(self, client: EtcdClient, prefix: str, *, retry_interval: float = 0.5, name: str = "") -> None:
        self.client = client
        self.prefix = prefix
        self.retry_interval = retry_interval
        self.revision = 0
        self.resyncs = 0
        self.reconnects = 0
        self.joins = 0  # snapshots read for a subscriber that joined a running stream
        self.synced = threading.Event()
        self._lock = threading.RLock()  # held while delivering: a join waits for the batch in flight
        self._subs: list[Subscription] = []
        self._pending: list[Subscription] = []  # joined, no snapshot yet
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._stream: WatchStream | None = None
        self._started = False
        self._thread = threading.Thread(target=self._run, name=name or f"sync {prefix}", daemon=True)

    # ---- subscribers --------------------------------------------------------------------

    def add(self, subscriber: Subscriber) -> Subscription:
        sub = Subscription(self, subscriber)
        with self._lock:
            self._pending.append(sub)
            joining = self.synced.is_set()
            start, self._started = not self._started, True
        if start:
            self._thread.start()
        elif joining:
            threading.Thread(target=self._join, args=(sub,), name=f"join {self.prefix}", daemon=True).start()
        return sub

    def remove(self, sub: Subscription) -> None:
        with self._lock:
            for group in (self._subs, self._pending):
                if sub in group:
                    group.remove(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs) + len(self._pending)

    def _join(self, sub: Subscription) -> None:
        """A snapshot for one subscriber of a running stream, read while delivery waits."""
        while not self._stop.is_set():
            try:
                with self._lock:
                    if sub not in self._pending:
                        return  # a re-list (compaction) took it along
                    revision = self._snapshot([sub])
                    self.joins += 1
                    log.debug("%s: subscriber joined at revision %d", self.prefix, revision)
                return
            except DatastoreError as exc:  # Compacted included: read again at a newer revision
                log.warning("sync %s: snapshot for a new subscriber failed: %s", self.prefix, exc)
            except Exception:
                log.exception("sync %s: a new subscriber failed on its snapshot", self.prefix)
            self._stop.wait(self.retry_interval)

    # ---- lifecycle ----------------------------------------------------------------------

    def kick(self) -> None:
        """Skip the current retry wait and reconnect at once."""
        self._kick.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._kick.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread.ident and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ---- the stream ---------------------------------------------------------------------

    def _snapshot(self, subs: list[Subscription]) -> int:
        """One paged list delivered to ``subs`` (caller holds the lock); they move to live."""
        pages = self.client.pages(self.prefix)
        for sub in subs:
            sub.subscriber.on_sync_begin(self.prefix, pages.revision)
        for page in pages:
            for sub in subs:
                sub.subscriber.on_sync_page(self.prefix, page)
        for sub in subs:
            sub.subscriber.on_sync_end(self.prefix, pages.revision)
            sub.floor = pages.revision
            if sub in self._pending:
                self._pending.remove(sub)
                self._subs.append(sub)
            sub.synced.set()
        return pages.revision

    def _resync(self) -> None:
        with self._lock:
            self.revision = self._snapshot(self._subs + self._pending)
            self.resyncs += 1
            self.synced.set()  # under the lock: a subscriber added after it needs its own snapshot

    def _deliver(self, batch: list[WatchEvent]) -> None:
        failed = False
        with self._lock:
            for sub in self._subs:
                events = batch if batch[0].kv.mod_revision > sub.floor else \
                    [e for e in batch if e.kv.mod_revision > sub.floor]
                if not events:
                    continue
                try:
                    sub.subscriber.on_events(self.prefix, events)
                except Exception:  # one subscriber's bug must not starve the others
                    log.exception("sync %s: a subscriber failed on an event", self.prefix)
                    failed = True
            self.revision = max(self.revision, max(e.kv.mod_revision for e in batch))
        if failed:
            raise _Resync()

    def _run(self) -> None:
        need_resync = True
        while not self._stop.is_set():
            try:
                if need_resync:
                    self._resync()
                    need_resync = False
                self._stream = self.client.watch_stream(self.prefix, self.revision + 1)
                for batch in self._stream:
                    self._deliver(batch)
                if not self._stop.is_set():
                    self.reconnects += 1
                    log.info("watch on %s dropped at revision %d; resuming", self.prefix, self.revision)
            except Compacted:
                log.warning("watch on %s fell behind a compaction; re-listing", self.prefix)
                need_resync = True
                continue
            except _Resync:
                need_resync = True
            except DatastoreError as exc:
                log.warning("watch on %s: %s", self.prefix, exc)
            except Exception:  # a consumer bug must not kill the watch silently
                log.exception("watch on %s: handler failed", self.prefix)
                need_resync = True
            finally:
                self._stream = None
            self._kick.wait(self.retry_interval)
            self._kick.clear()


class Syncer:
    """The streams of one process on one datastore, one per prefix."""

    def __init__(self, client: EtcdClient, *, retry_interval: float = 0.5, name: str = "sync") -> None:
        self.client = client
        self.retry_interval = retry_interval
        self.name = name
        self.streams: dict[str, PrefixStream] = {}
        self._lock = threading.Lock()

    def serves(self, endpoints: Iterable[str]) -> bool:
        """Whether these endpoints name this syncer's datastore (same set of URLs)."""
        def norm(urls: Iterable[str]) -> set[str]:
            return {u.strip().rstrip("/") for u in urls if u.strip()}

        return norm(endpoints) == norm(self.client.endpoints)

    def subscribe(self, prefix: str, subscriber: Subscriber) -> Subscription:
        with self._lock:
            stream = self.streams.get(prefix)
            if stream is None:
                stream = PrefixStream(self.client, prefix, retry_interval=self.retry_interval,
                                      name=f"{self.name} {prefix}")
                self.streams[prefix] = stream
        return stream.add(subscriber)

    def subscribe_many(self, prefixes: Sequence[str], subscriber: Subscriber) -> list[Subscription]:
        return [self.subscribe(prefix, subscriber) for prefix in prefixes]

    def unsubscribe(self, subs: Iterable[Subscription], *, timeout: float = 2.0) -> None:
        """Remove ``subs``; a stream left without subscribers is stopped."""
        idle: list[PrefixStream] = []
        with self._lock:
            for sub in subs:
                sub.cancel()
                if sub.stream.subscribers == 0 and self.streams.get(sub.prefix) is sub.stream:
                    del self.streams[sub.prefix]
                    idle.append(sub.stream)
        for stream in idle:
            stream.stop(timeout)

    def kick(self) -> None:
        for stream in list(self.streams.values()):
            stream.kick()

    def stop(self, timeout: float = 2.0) -> None:
        with self._lock:
            streams = list(self.streams.values())
            self.streams.clear()
        for stream in streams:
            stream.stop(timeout)


class TypedCache(Generic[T]):
    """A subscriber keeping ``{key: parse(kv)}`` for one prefix.

    ``parse`` returns the item, or None for a value that means "absent" (dropped
    from the cache); a value it raises ``ValueError``/``KeyError``/``TypeError`` (or
    ``PycalicoError`` or one of ``errors``) on is logged and skipped. A snapshot is applied page by page
    into the same dict (never two copies of the prefix); keys it did not list are
    removed at its end.

    ``lock`` guards ``items`` (pass the owner's lock to read several caches at one
    moment). ``on_applied(revision)`` runs under it after every change, and
    ``on_change()`` after it is released.
    """

    def __init__(
        self,
        parse: Callable[[KeyValue], T | None],
        *,
        items: dict[str, T] | None = None,
        lock: threading.Lock | threading.RLock | None = None,
        on_applied: Callable[[int], None] | None = None,
        on_change: Callable[[], None] | None = None,
        errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.parse = parse
        self.items: dict[str, T] = items if items is not None else {}
        self.lock = lock or threading.Lock()
        self.on_applied = on_applied
        self.on_change = on_change
        self.errors: tuple[type[BaseException], ...] = (ValueError, KeyError, TypeError, PycalicoError, *errors)
        self.revision = 0
        self.synced = threading.Event()
        self._present: set[str] = set()

    def _put(self, kv: KeyValue) -> None:
        try:
            item = self.parse(kv)
        except self.errors as exc:
            log.warning("ignoring %s: %s", kv.key, exc)
            return
        if item is None:
            self.items.pop(kv.key, None)
        else:
            self.items[kv.key] = item

    def _applied(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        if self.on_applied is not None:
            self.on_applied(self.revision)

    def on_sync_begin(self, prefix: str, revision: int) -> None:
        self._present = set()

    def on_sync_page(self, prefix: str, kvs: list[KeyValue]) -> None:
        with self.lock:
            for kv in kvs:
                self._present.add(kv.key)
                self._put(kv)

    def on_sync_end(self, prefix: str, revision: int) -> None:
        with self.lock:
            for key in [k for k in self.items if k not in self._present]:
                del self.items[key]
            self._present = set()
            self._applied(revision)
        self.synced.set()
        if self.on_change is not None:
            self.on_change()

    def on_events(self, prefix: str, events: list[WatchEvent]) -> None:
        with self.lock:
            for event in events:
                if event.kind == "delete":
                    self.items.pop(event.kv.key, None)
                else:
                    self._put(event.kv)
            self._applied(max(e.kv.mod_revision for e in events))
        if self.on_change is not None:
            self.on_change()
