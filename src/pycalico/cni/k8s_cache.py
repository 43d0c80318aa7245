"""Pods, namespaces and service accounts mirrored from the Kubernetes API for the CNI fast
path, so that an ADD served by the agent makes no API round trip (issue 12; the in-process
plugin does GETs).

List (in pages, ``limit``/``continue``) then watch from the list's ``resourceVersion`` with
bookmarks; a dropped stream resumes from the last version seen; ``410 Gone`` (the version
was compacted away) re-lists. Pods are kept only when they run on this node
(``spec.nodeName``), namespaces and service accounts all. A lookup that misses (a pod the
watch has not delivered yet) returns None and the caller GETs it.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.parse
from typing import Any

from pycalico.cni.k8s import KubeClient, KubeUnavailable

log = logging.getLogger(__name__)
PAGE = 500


class _Gone(Exception):
    pass


class KubeMirror:
    """One list-then-watch of a collection, kept as ``{(namespace, name): object}``."""

    def __init__(self, client: KubeClient, path: str, *, keep: Any = None, timeout_s: int = 300,
                 retry_s: float = 1.0) -> None:
        self.client, self.path, self.keep = client, path, keep or (lambda obj: True)
        self.timeout_s, self.retry_s = timeout_s, retry_s
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = ""
        self.relists = 0
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn: http.client.HTTPSConnection | None = None
        self._thread = threading.Thread(target=self._run, name=f"kube-mirror {path}", daemon=True)

    def start(self) -> KubeMirror:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.close()
        self._thread.join(5)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self.objects.get((namespace, name))

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    def _list(self) -> None:
        fresh: dict[tuple[str, str], dict[str, Any]] = {}
        token, version = "", ""
        while True:
            query = {"limit": str(PAGE)}
            if token:
                query["continue"] = token
            page = self.client.get(f"{self.path}?{urllib.parse.urlencode(query)}")
            if page is None:
                raise KubeUnavailable(f"{self.path}: not found")
            if page.get("kind") == "Status" and page.get("code") == 410:
                raise _Gone()
            for obj in page.get("items") or []:
                if self.keep(obj):
                    fresh[self._key(obj)] = obj
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            token = str(meta.get("continue") or "")
            if not token:
                break
        with self._lock:
            self.objects = fresh
        self.version = version
        self.relists += 1
        self.synced.set()

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise KubeUnavailable(f"watch {self.path}: {obj.get('message')}")
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            key = self._key(obj)
            with self._lock:
                if kind == "DELETED" or not self.keep(obj):
                    self.objects.pop(key, None)
                else:
                    self.objects[key] = obj
        if version:
            self.version = version

    def _watch(self) -> None:
        query = urllib.parse.urlencode({"watch": "1", "resourceVersion": self.version, "allowWatchBookmarks": "true",
                                        "timeoutSeconds": str(self.timeout_s)})
        conn = http.client.HTTPSConnection(self.client.host, self.client.port, timeout=self.timeout_s + 30,
                                           context=self.client.ssl)
        self._conn = conn
        try:
            conn.request("GET", f"{self.path}?{query}", headers=self.client.headers)
            resp = conn.getresponse()
            if resp.status == 410:
                raise _Gone()
            if resp.status != 200:
                raise KubeUnavailable(f"watch {self.path}: HTTP {resp.status}")
            while not self._stop.is_set():
                try:
                    line = resp.readline()
                except (AttributeError, OSError, http.client.HTTPException) as exc:
                    # stop() closed the connection under the read (http.client then fails oddly)
                    if self._stop.is_set():
                        return
                    raise KubeUnavailable(f"watch {self.path}: {exc}") from None
                if not line:
                    return  # the server ended the watch (timeoutSeconds): resume from self.version
                if line.strip():
                    self._apply(json.loads(line))
        finally:
            self._conn = None
            conn.close()

    def _run(self) -> None:
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                self._watch()
            except _Gone:
                log.info("%s: resourceVersion %s is gone; listing again", self.path, self.version)
                need_list = True
                continue
            except (KubeUnavailable, OSError, http.client.HTTPException, ValueError) as exc:
                if self._stop.is_set():
                    return
                log.warning("%s: %s; retrying", self.path, exc)
            self._stop.wait(self.retry_s)


class PodCache:
    """This node's pods, every namespace and every service account, for
    ``pycalico.cni.k8s.pod_info``."""

    def __init__(self, client: KubeClient, nodename: str) -> None:
        self.pods = KubeMirror(client, "/api/v1/pods",
                               keep=lambda pod: (pod.get("spec") or {}).get("nodeName") == nodename)
        self.namespaces = KubeMirror(client, "/api/v1/namespaces")
        self.service_accounts = KubeMirror(client, "/api/v1/serviceaccounts")
        self.mirrors = (self.pods, self.namespaces, self.service_accounts)

    def start(self) -> PodCache:
        for mirror in self.mirrors:
            mirror.start()
        return self

    def stop(self) -> None:
        for mirror in self.mirrors:
            mirror.stop()

    def synced(self) -> bool:
        return all(mirror.synced.is_set() for mirror in self.mirrors)

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.pods.get(namespace, name)

    def namespace(self, name: str) -> dict[str, Any] | None:
        return self.namespaces.get("", name)

    def service_account(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.service_accounts.get(namespace, name)
