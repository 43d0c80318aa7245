"""List-then-watch of one Kubernetes kind into a local cache, as client-go's reflector does:
list (in pages), watch from the list's resourceVersion with bookmarks, re-open a watch the
server closed from the last resourceVersion seen, re-list after a 410 Gone, back off while
the API server is unreachable. Every difference reaches ``on_change(key, old, new)``
(``new`` None: deleted), including those a re-list finds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pycalico.kube.api import Gone, KubeApi, KubeError, KubeUnavailable, Obj

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace or "", name)
ChangeHandler = Callable[[Key, Obj | None, Obj | None], None]


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Informer:
    def __init__(self, api: KubeApi, plural: str, on_change: ChangeHandler, *, watch_timeout: int = 300,
                 min_backoff: float = 0.5, max_backoff: float = 10.0) -> None:
        self.api = api
        self.plural = plural
        self.on_change = on_change
        self.watch_timeout = watch_timeout
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.resource_version = ""
        self.synced = threading.Event()
        self.lists = 0
        self.gone = 0
        self.watches = 0
        self.bookmarks = 0
        self._cache: dict[Key, Obj] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer-{plural}", daemon=True)

    # ---- cache -------------------------------------------------------------------------
    def get(self, key: Key) -> Obj | None:
        with self._lock:
            return self._cache.get(key)

    def items(self) -> dict[Key, Obj]:
        with self._lock:
            return dict(self._cache)

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> Informer:
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Stop at the next event or bookmark (see ``stop`` to also wait for it)."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    # ---- list and watch ----------------------------------------------------------------
    def _notify(self, key: Key, old: Obj | None, new: Obj | None) -> None:
        try:
            self.on_change(key, old, new)
        except Exception:  # a handler bug must not stop the informer; the reconciler catches up
            log.exception("%s %s/%s: change handler failed", self.plural, *key)

    def _relist(self) -> None:
        items, version = self.api.list(self.plural)
        fresh = {key_of(o): o for o in items}
        with self._lock:
            old, self._cache = self._cache, fresh
        for key, obj in fresh.items():
            if old.get(key) != obj:
                self._notify(key, old.get(key), obj)
        for key in old.keys() - fresh.keys():
            self._notify(key, old[key], None)
        self.resource_version = version
        self.lists += 1
        self.synced.set()

    def _apply(self, kind: str, obj: Obj) -> None:
        key = key_of(obj)
        with self._lock:
            old = self._cache.get(key)
            if kind == "DELETED":
                self._cache.pop(key, None)
            else:
                self._cache[key] = obj
        self._notify(key, old, None if kind == "DELETED" else obj)

    def _run(self) -> None:
        need_list = True
        backoff = self.min_backoff
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                self.watches += 1
                for kind, obj in self.api.watch(self.plural, self.resource_version,
                                                timeout_seconds=self.watch_timeout):
                    if self._stop.is_set():
                        return
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                    if kind == "BOOKMARK":
                        self.bookmarks += 1
                    elif kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._apply(kind, obj)
                    if version:
                        self.resource_version = version
                    backoff = self.min_backoff
                continue  # closed by the server (timeout): watch again from where we are
            except Gone:
                log.info("%s: resourceVersion %s expired (410); listing again", self.plural, self.resource_version)
                self.gone += 1
                need_list = True
                continue
            except (KubeUnavailable, KubeError) as exc:
                log.warning("%s: %s; retrying in %.1fs", self.plural, exc, backoff)
            except Exception:
                log.exception("%s: list/watch failed; listing again", self.plural)
                need_list = True
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff)
