"""A read cache in front of EtcdClient, for the fast-path server.

Two kinds of keys:
- MIRRORED (IPAM config, affinities, pools, nodes, cluster information): small and
  few, kept complete by list-then-watch: the cache subscribes to a syncer
  (``pycalico.datastore.syncer``) — inside the agent, the agent's own, so pools and
  nodes are watched once per process. The cache can answer "not there" for them.
- REMEMBERED (blocks, handles): big or many, not watched — a block is rewritten by
  every ADD and DEL, and watching it would cost etcd and the agent a second copy of
  each write (measured: ~1 ms of etcd CPU per ADD). They are filled by our own reads,
  by write-through of our successful transactions, and by the current values a lost
  compare-and-swap returns. Only present values are served; "not there" always asks
  etcd.

``read_many`` (IPAM's context and block prefetch) and ``get`` are answered from
memory when the cache knows every key asked.

Why this stays correct: every IPAM write is a compare-and-swap on the mod_revision
it read. A stale block or handle (another host borrowed from the block, a direct
IPAM caller wrote it) makes the compare fail, the failure's values refresh the
cache, and IPAM retries; it never writes over a change it did not see. The one
answer that could lose an address without a compare — "this key does not exist" —
comes from memory only for mirrored keys whose deletion the cache saw.

Generic on purpose: it knows prefixes and revisions, not Calico's JSON.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Sequence
from typing import Any

from pycalico.datastore.etcd import EtcdClient, KeyValue, WatchEvent
from pycalico.datastore.syncer import Subscription, Syncer
from pycalico.errors import DatastoreUnavailable, OutcomeUnknown
from pycalico.model import keys

log = logging.getLogger("pycalico.cni.cache")

# What the ADD path reads and can watch cheaply.
MIRRORED = (
    keys.IPAM_CONFIG_KEY,
    keys.HOST_AFFINITY_ROOT,
    keys.resource_prefix("ippools"),
    keys.resource_prefix("nodes"),
    keys.resource_prefix("clusterinformations"),
)
# Blocks and handles this agent read, wrote or saw in a lost compare.
REMEMBERED = (keys.IPAM_ROOT + "assignment/", keys.HANDLE_PREFIX)
CACHED = MIRRORED + REMEMBERED
# Deletions remembered (to answer "gone" and to ignore late events); the oldest are
# forgotten beyond this many, after which those keys are simply unknown again.
MAX_TOMBSTONES = 4096


class ReconnectingEtcdClient(EtcdClient):
    """One more pass over the endpoints when none could be reached. Safe for writes
    too: DatastoreUnavailable means no endpoint took the request (EtcdClient raises
    OutcomeUnknown, never retried here, once a write may have been taken). A kept-alive
    connection etcd closed (a restart) is found by EtcdClient before it writes on it, so
    this pass is only a second chance for an endpoint that was coming back."""

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().call(path, body)
        except DatastoreUnavailable:
            return super().call(path, body)


class CachingEtcdClient(ReconnectingEtcdClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache_lock = threading.Lock()
        self._kvs: dict[str, KeyValue | None] = {}  # None: deleted at _revs[key]
        self._revs: dict[str, int] = {}
        self._tombstones: dict[str, None] = {}  # insertion-ordered set
        self._watchers: list[Subscription] = []
        self._present: dict[str, set[str]] = {}  # per prefix, during a snapshot
        self._syncer: Syncer | None = None
        self._own_syncer: Syncer | None = None
        self.hits = 0
        self.misses = 0

    # ---- mirroring (a syncer subscriber) -------------------------------------------------

    def start_mirror(self, prefixes: Sequence[str] = MIRRORED, *, syncer: Syncer | None = None) -> CachingEtcdClient:
        """Mirror ``prefixes`` through ``syncer`` (the agent's, so the agent and the fast
        path share one watch per prefix), or through a syncer of our own over this client."""
        if syncer is None:
            syncer = self._own_syncer = Syncer(self, name="cni-cache")
        self._syncer = syncer
        self._watchers.extend(syncer.subscribe_many(prefixes, self))
        return self

    def stop_mirror(self) -> None:
        if self._syncer is not None:
            self._syncer.unsubscribe(self._watchers)
        if self._own_syncer is not None:
            self._own_syncer.stop()
        self._watchers.clear()
        self._syncer = self._own_syncer = None

    def _synced(self, key: str) -> bool:
        return any(key.startswith(w.prefix) and w.synced.is_set() for w in self._watchers)

    def _store(self, key: str, kv: KeyValue | None, revision: int) -> None:
        if revision >= self._revs.get(key, 0):
            self._kvs[key] = kv
            self._revs[key] = revision
            if kv is None:
                self._tombstones[key] = None
                if len(self._tombstones) > MAX_TOMBSTONES:
                    for old in list(self._tombstones)[: MAX_TOMBSTONES // 2]:
                        del self._tombstones[old]
                        if self._kvs.get(old, 0) is None:
                            del self._kvs[old]
                            del self._revs[old]
            else:
                self._tombstones.pop(key, None)

    def on_sync_begin(self, prefix: str, revision: int) -> None:
        self._present[prefix] = set()

    def on_sync_page(self, prefix: str, kvs: list[KeyValue]) -> None:
        present = self._present.setdefault(prefix, set())
        with self._cache_lock:
            for kv in kvs:
                present.add(kv.key)
                self._store(kv.key, kv, kv.mod_revision)

    def on_sync_end(self, prefix: str, revision: int) -> None:
        """The snapshot is complete: keys under ``prefix`` it did not list are gone."""
        present = self._present.pop(prefix, set())
        with self._cache_lock:
            for key in [k for k in self._kvs if k.startswith(prefix) and k not in present]:
                if self._revs.get(key, 0) <= revision:
                    self._kvs[key] = None
                    self._revs[key] = revision

    def on_events(self, prefix: str, events: list[WatchEvent]) -> None:
        with self._cache_lock:
            for event in events:
                if event.kind == "delete":
                    self._store(event.kv.key, None, event.kv.mod_revision)
                else:
                    self._store(event.kv.key, event.kv, event.kv.mod_revision)

    # ---- reads -------------------------------------------------------------------------

    def read_many(self, ranges: Sequence[tuple[str, bool]]) -> list[list[KeyValue]]:
        if self._watchers:
            with self._cache_lock:
                out = self._from_memory(ranges)
            if out is not None:
                self.hits += 1
                return out
        self.misses += 1
        result = super().read_many(ranges)
        if self._watchers:
            self._remember(kv for (key, is_prefix), kvs in zip(ranges, result, strict=True) if not is_prefix
                           for kv in kvs)
        return result

    def _from_memory(self, ranges: Sequence[tuple[str, bool]]) -> list[list[KeyValue]] | None:
        """Every range answered from memory, or None when one of them is not known."""
        out: list[list[KeyValue]] = []
        for key, is_prefix in ranges:
            mirrored = key.startswith(MIRRORED) and self._synced(key)
            if is_prefix:
                if not mirrored:
                    return None
                found = [kv for k, kv in self._kvs.items() if kv is not None and k.startswith(key)]
                out.append(sorted(found, key=lambda kv: kv.key))
                continue
            kv = self._kvs.get(key)
            if kv is None and not mirrored:  # a remembered key is served only when present
                return None
            out.append([kv] if kv is not None else [])
        return out

    def _remember(self, kvs: Any) -> None:
        with self._cache_lock:
            for kv in kvs:
                if kv.key.startswith(REMEMBERED):
                    self._store(kv.key, kv, kv.mod_revision)

    def get(self, key: str) -> KeyValue | None:
        """From memory when the cache knows the key: its value, or — for mirrored
        prefixes — its deletion, seen in a watch event or done by us. A key it has never
        seen is asked of etcd: "not there" must not come from a cache that may simply not
        have heard of it yet."""
        if self._watchers:
            mirrored = key.startswith(MIRRORED) and self._synced(key)
            if mirrored or key.startswith(REMEMBERED):
                with self._cache_lock:
                    known = key in self._kvs
                    kv = self._kvs.get(key)
                if known and (kv is not None or mirrored):
                    self.hits += 1
                    return kv
        self.misses += 1
        kv = super().get(key)
        if kv is not None and self._watchers:
            self._remember([kv])
        return kv

    # ---- write-through -----------------------------------------------------------------

    def _forget(self, keys_written: Sequence[str]) -> None:
        """A write whose outcome is unknown: what we remember of its blocks and handles
        may be stale, so they are asked of etcd again. Mirrored keys stay: their watch
        tells whether the write landed, and forgetting one would read as "not there"."""
        with self._cache_lock:
            for key in keys_written:
                if key.startswith(REMEMBERED):
                    self._kvs.pop(key, None)
                    self._revs.pop(key, None)

    def put(self, key: str, value: str, *, lease: int = 0) -> int:
        try:
            revision = super().put(key, value, lease=lease)
        except OutcomeUnknown:
            self._forget([key])
            raise
        if self._watchers and key.startswith(CACHED):
            with self._cache_lock:
                old = self._kvs.get(key)
                version = (old.version + 1) if old is not None else 1
                created = old.create_revision if old is not None else revision
                self._store(key, KeyValue(key, value, revision, created, version, lease), revision)
        return revision

    def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        if mod_revision is not None:
            return super().delete(key, mod_revision=mod_revision)  # a txn: written through
        deleted = super().delete(key)
        if self._watchers and key.startswith(CACHED):
            # No revision comes back: forget the key until the watch (or etcd) tells.
            with self._cache_lock:
                if self._kvs.get(key) is not None:
                    del self._kvs[key]
                    self._revs.pop(key, None)
        return deleted

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        try:
            resp = super().txn(compare, success, failure)
        except OutcomeUnknown as exc:
            self._forget(exc.keys)
            raise
        if not self._watchers:
            return resp
        revision = int((resp.get("header") or {}).get("revision", 0) or 0)
        if not revision:
            return resp
        with self._cache_lock:
            if resp.get("succeeded", not compare):
                self._write_through(success, revision)
            else:
                self._read_through(failure or [], resp, revision)
        return resp

    def _write_through(self, ops: list[dict[str, Any]], revision: int) -> None:
        for op in ops:
            if "request_put" in op:
                key = base64.b64decode(op["request_put"]["key"]).decode()
                if key.startswith(CACHED):
                    value = base64.b64decode(op["request_put"].get("value") or b"").decode()
                    old = self._kvs.get(key)
                    version = (old.version + 1) if old is not None else 1
                    created = old.create_revision if old is not None else revision
                    self._store(key, KeyValue(key, value, revision, created, version), revision)
            elif "request_delete_range" in op:
                rng = op["request_delete_range"]
                if "range_end" not in rng:
                    key = base64.b64decode(rng["key"]).decode()
                    if key.startswith(CACHED):
                        self._store(key, None, revision)

    def _read_through(self, ops: list[dict[str, Any]], resp: dict[str, Any], revision: int) -> None:
        """A lost compare-and-swap returns the current values: keep them."""
        for op, item in zip(ops, resp.get("responses") or [], strict=False):
            rng = op.get("request_range")
            if not rng or "range_end" in rng:
                continue
            key = base64.b64decode(rng["key"]).decode()
            if not key.startswith(CACHED):
                continue
            kvs = (item.get("response_range") or {}).get("kvs") or []
            if kvs:
                kv = KeyValue.from_gateway(kvs[0])
                self._store(key, kv, kv.mod_revision)
            else:
                self._store(key, None, revision)
