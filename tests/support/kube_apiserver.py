"""A stand-in Kubernetes API server for tests: the real kube-apiserver cannot be installed
from any registry this machine reaches.

It is a STAND-IN. What it does, as the real server does (calico-kubernetes.md §4):

- HTTPS (on loopback unless ``host`` says otherwise) with client-certificate authentication (a
  certificate of its own test CA is required; any such certificate is allowed everything).
- Namespace, Pod, ServiceAccount, Node (``/api/v1/...``) and networking.k8s.io/v1 NetworkPolicy
  (``/apis/networking.k8s.io/v1/...``) at the real paths: cluster-wide and per-namespace
  collections, ``GET/PUT/PATCH (merge-patch)/DELETE`` of one object, ``POST`` to a collection.
- Real-shaped objects: ``uid``, ``creationTimestamp``, ``resourceVersion`` (one counter for
  every kind, bumped on every write), lists with ``metadata.resourceVersion``, ``limit`` and
  ``continue`` (later pages are read at the first page's revision from the history it keeps).
- Watch (``?watch=1&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S``): a chunked
  stream of ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": …}`` lines; a watch
  from ``""``/``"0"`` first sends the current objects as ADDED; bookmarks every
  ``bookmark_interval`` seconds carry the current resourceVersion.
- ``compact()`` simulates etcd compaction: a watch from an older resourceVersion gets an ERROR
  event with a ``Status`` of code 410 (reason Expired); a list with an older ``continue`` token
  gets HTTP 410.
- 404 NotFound / 409 AlreadyExists / 409 Conflict (stale ``metadata.resourceVersion`` on
  update) as ``Status`` objects; a namespaced create in a missing namespace is 404.
- The defaulting Calico relies on: NetworkPolicy ``policyTypes`` and port ``protocol``,
  the namespace label ``kubernetes.io/metadata.name``, a pod's ``serviceAccountName: default``.
- ``stop()``/``start()`` take it away and bring it back on the same port with its state kept
  (open watches are cut, new connections refused while stopped).
- ``GET /version``, ``/healthz``, ``/readyz``, ``/livez``.

What it does NOT do: no admission beyond the defaulting above (no validation of object
contents, no quota, no finalizers or graceful deletion: DELETE removes at once and a namespace
deletion removes its objects at once), no field selectors, no label selectors, no
``resourceVersionMatch`` (a list is always at the latest revision), no ``sendInitialEvents``
streaming lists (refused with 400 so a client-go informer falls back to LIST+WATCH), no
strategic-merge or JSON patch, no subresources (status, token, eviction), no discovery
beyond ``/version``, no authorisation (RBAC), no tokens, no HTTP/2, no protobuf.

Tests drive it either over HTTPS like any client or through its Python methods (``create``,
``update``, ``delete``, ``get``), which take the same path and emit the same watch events.
``python -m tests.support.kube_apiserver serve`` runs one as a process for the molecule
scenario ``kubernetes`` (its hosts reach it on their network's gateway address).
"""

from __future__ import annotations

import base64
import copy
import datetime
import http.server
import json
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.etcd import Pki, make_pki


class ApiError(Exception):
    """An error answered as a Kubernetes ``Status``."""

    def __init__(self, code: int, reason: str, message: str, *, name: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.name, self.kind = code, reason, message, name, kind

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": self.message, "reason": self.reason, "code": self.code}
        if self.name or self.kind:
            out["details"] = {"name": self.name, "kind": self.kind}
        return out


@dataclass(frozen=True)
class Kind:
    kind: str
    api_version: str
    plural: str
    namespaced: bool

    @property
    def group_prefix(self) -> str:
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"


KINDS: dict[str, Kind] = {k.plural: k for k in (
    Kind("Namespace", "v1", "namespaces", False),
    Kind("Node", "v1", "nodes", False),
    Kind("Pod", "v1", "pods", True),
    Kind("ServiceAccount", "v1", "serviceaccounts", True),
    Kind("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies", True),
)}
PREFIXES = {"/api/v1": "v1", "/apis/networking.k8s.io/v1": "networking.k8s.io/v1"}

Key = tuple[str, str]  # (namespace or "", name)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _default(kind: Kind, obj: dict[str, Any]) -> None:
    """The API server's defaulting that Calico depends on (calico-kubernetes.md §4.3)."""
    meta = obj["metadata"]
    spec = obj.setdefault("spec", {}) if kind.plural != "serviceaccounts" else {}
    if kind.plural == "namespaces":
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj.setdefault("status", {"phase": "Active"})
    elif kind.plural == "pods":
        spec.setdefault("serviceAccountName", "default")
        obj.setdefault("status", {"phase": "Pending"})
    elif kind.plural == "networkpolicies":
        spec.setdefault("podSelector", {})
        if not spec.get("policyTypes"):
            spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
        for direction in ("ingress", "egress"):
            for rule in spec.get(direction) or []:
                for port in rule.get("ports") or []:
                    port.setdefault("protocol", "TCP")


class KubeApiServer:
    """See the module docstring. Use as a context manager or call ``start``/``close``."""

    def __init__(self, directory: Path, *, bookmark_interval: float = 1.0, pki: Pki | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.pki = pki or make_pki(directory / "pki", () if host == "127.0.0.1" else (host,))
        self.port = port  # 0: the first start binds any free port and keeps it for later starts
        self.bookmark_interval = bookmark_interval
        self._lock = threading.Condition()
        self._rv = 1
        self._compacted = 0  # a watch or continue from a revision below this is 410 Gone
        # (plural, key) → [(revision, object or None for deleted)], oldest first
        self._history: dict[str, dict[Key, list[tuple[int, dict[str, Any] | None]]]] = {p: {} for p in KINDS}
        self._events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, plural, type, object)
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._generation = 0  # bumped by stop(): open watches of an older generation end
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, plural or path) → count
        self.watches_opened = 0

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> KubeApiServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.pki.server_cert), str(self.pki.server_key))
        context.load_verify_locations(str(self.pki.ca))
        context.verify_mode = ssl.CERT_REQUIRED
        api = self

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, addr = self.socket.accept()
                tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                with api._lock:
                    api._connections.add(tls)
                return tls, addr

            def shutdown_request(self, request: Any) -> None:
                with api._lock:
                    api._connections.discard(request)
                super().shutdown_request(request)

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # refused certificates and cut connections are expected in tests

        self._server = Server((self.host, self.port), _handler(self))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="kube-apiserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Unavailable: refuse new connections and cut every open one (watches included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            self._generation += 1
            connections = list(self._connections)
            self._connections.clear()
            self._lock.notify_all()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_kubeconfig(self, path: Path, cert: Path | None = None, key: Path | None = None) -> Path:
        """A kubeconfig with this server, its CA and a client certificate (the test client's by default)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url,
                                                         "certificate-authority": str(self.pki.ca)}}],
            "users": [{"name": "admin", "user": {"client-certificate": str(cert or self.pki.client_cert),
                                                 "client-key": str(key or self.pki.client_key)}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "admin"}}],
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    def write_embedded_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig with the CA and the test client's certificate inline (the ``*-data``
        fields, as kubeasz writes them with ``--embed-certs``): one file to copy to a host."""
        def data(file: Path) -> str:
            return base64.b64encode(file.read_bytes()).decode()

        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url,
                                                         "certificate-authority-data": data(self.pki.ca)}}],
            "users": [{"name": "admin", "user": {"client-certificate-data": data(self.pki.client_cert),
                                                 "client-key-data": data(self.pki.client_key)}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "admin"}}],
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)  # it holds a private key
        return path

    # ---- the store -------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def compact(self) -> int:
        """Forget history up to now (as etcd compaction does); returns the compacted revision."""
        with self._lock:
            self._compacted = self._rv
            self._events = [e for e in self._events if e[0] > self._compacted]
            for objects in self._history.values():
                for key in list(objects):
                    latest = objects[key][-1]
                    if latest[1] is None:
                        del objects[key]
                    else:
                        objects[key] = [latest]
            return self._compacted

    def _current(self, plural: str, key: Key) -> dict[str, Any] | None:
        versions = self._history[plural].get(key)
        return versions[-1][1] if versions else None

    def _record(self, kind: Kind, key: Key, event: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._history[kind.plural].setdefault(key, []).append((self._rv, None if event == "DELETED" else obj))
        self._events.append((self._rv, kind.plural, event, obj))
        self._lock.notify_all()
        return copy.deepcopy(obj)

    @staticmethod
    def _kind(plural: str) -> Kind:
        if plural not in KINDS:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})")
        return KINDS[plural]

    def _key(self, kind: Kind, name: str, namespace: str | None) -> Key:
        if kind.namespaced and not namespace:
            raise ApiError(400, "BadRequest", f"a {kind.kind} needs a namespace")
        return ((namespace or "") if kind.namespaced else "", name)

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        kind = self._kind(plural)
        with self._lock:
            obj = self._current(plural, self._key(kind, name, namespace))
        if obj is None:
            raise ApiError(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)
        return copy.deepcopy(obj)

    def create(self, plural: str, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        kind = self._kind(plural)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        namespace = namespace or meta.get("namespace")
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", f"{kind.kind} metadata.name: Required value", kind=plural)
        if meta.get("resourceVersion"):
            raise ApiError(400, "BadRequest", "resourceVersion should not be set on objects to be created")
        key = self._key(kind, name, namespace)
        with self._lock:
            if kind.namespaced and self._current("namespaces", ("", key[0])) is None:
                raise ApiError(404, "NotFound", f'namespaces "{key[0]}" not found', name=key[0], kind="namespaces")
            if self._current(plural, key) is not None:
                raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists', name=name, kind=plural)
            obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
            if kind.namespaced:
                meta["namespace"] = key[0]
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            _default(kind, obj)
            return self._record(kind, key, "ADDED", obj)

    def update(self, plural: str, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """PUT: 404 if absent, 409 Conflict if ``metadata.resourceVersion`` is set and stale."""
        kind = self._kind(plural)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        name = str(meta.get("name") or "")
        key = self._key(kind, name, namespace or meta.get("namespace"))
        with self._lock:
            current = self._current(plural, key)
            if current is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)
            wanted = meta.get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": the object '
                               "has been modified; please apply your changes to the latest version and try again",
                               name=name, kind=plural)
            obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
            for field in ("uid", "creationTimestamp", "namespace"):
                if field in current["metadata"]:
                    meta[field] = current["metadata"][field]
            _default(kind, obj)
            return self._record(kind, key, "MODIFIED", obj)

    def patch(self, plural: str, name: str, patch: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        with self._lock:
            current = self.get(plural, name, namespace)
            merged = _merge_patch(current, patch)
            merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.update(plural, merged, namespace)

    def delete(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        kind = self._kind(plural)
        key = self._key(kind, name, namespace)
        with self._lock:
            current = self._current(plural, key)
            if current is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)
            if plural == "namespaces":
                for child in KINDS.values():
                    if child.namespaced:
                        for child_key in [k for k in self._history[child.plural] if k[0] == name]:
                            obj = self._current(child.plural, child_key)
                            if obj is not None:
                                self._record(child, child_key, "DELETED", obj)
            return self._record(kind, key, "DELETED", current)

    def objects(self, plural: str, namespace: str | None = None, at: int | None = None) -> list[dict[str, Any]]:
        """Objects of a kind at revision ``at`` (now by default), in key order."""
        with self._lock:
            out = []
            for key in sorted(self._history[plural]):
                if namespace and key[0] != namespace:
                    continue
                versions = [v for v in self._history[plural][key] if at is None or v[0] <= at]
                if versions and versions[-1][1] is not None:
                    out.append(copy.deepcopy(versions[-1][1]))
            return out

    # ---- list and watch (HTTP) ---------------------------------------------------------------
    def list_page(self, plural: str, namespace: str | None, limit: int, token: str) -> dict[str, Any]:
        kind = self._kind(plural)
        with self._lock:
            if token:
                try:
                    state = json.loads(base64.urlsafe_b64decode(token.encode()))
                    at, start = int(state["rv"]), tuple(state["start"])
                except (ValueError, KeyError, TypeError):
                    raise ApiError(400, "BadRequest", "continue key is not valid") from None
                if at < self._compacted:
                    raise ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                                   "consistent list result. You can start a new list without the continue "
                                   "parameter.")
            else:
                at, start = self._rv, ("", "")
            items = [o for o in self.objects(plural, namespace, at)
                     if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start or not token]
        meta: dict[str, Any] = {"resourceVersion": str(at)}
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": at, "start": [last.get("namespace", ""), last["name"]]}).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        for item in items:  # list items carry no kind/apiVersion, as the real server's
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta, "items": items}

    def watch_events(self, plural: str, namespace: str | None, since: str, bookmarks: bool,
                     timeout: float, generation: int) -> Any:
        """Yields watch event dicts until the timeout, a stop(), or a 410."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if since in ("", "0"):
                position = self._rv
                initial = [{"type": "ADDED", "object": o} for o in self.objects(plural, namespace)]
            else:
                position = int(since)
                initial = []
                if position < self._compacted:
                    yield {"type": "ERROR", "object": ApiError(
                        410, "Expired", f"too old resource version: {position} ({self._compacted})").status()}
                    return
        yield from initial
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            with self._lock:
                now = time.monotonic()
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                if wait > 0 and self._generation == generation and not (
                        self._events and self._events[-1][0] > position):
                    self._lock.wait(wait)
                if self._generation != generation:
                    return
                pending = [e for e in self._events if e[0] > position]
                current = self._rv
            for rv, event_plural, event_type, obj in pending:
                position = rv
                if event_plural != plural or (namespace and obj["metadata"].get("namespace") != namespace):
                    continue
                yield {"type": event_type, "object": obj}
            position = max(position, current)
            now = time.monotonic()
            if now >= deadline:
                return
            if bookmarks and now >= next_bookmark:
                kind = KINDS[plural]
                yield {"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version,
                                                      "metadata": {"resourceVersion": str(position)}}}
                next_bookmark = now + self.bookmark_interval


def _handler(api: KubeApiServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send_json(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                raise ApiError(400, "BadRequest", "the request body is not JSON") from None
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body is not a JSON object")
            return body

        def _route(self) -> tuple[str, str | None, str | None, dict[str, str]]:
            """(plural, namespace, name, query) of the request path."""
            url = urllib.parse.urlsplit(self.path)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
            prefix = next((p for p in PREFIXES if url.path.startswith(p + "/")), None)
            if prefix is None:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({url.path})")
            version = PREFIXES[prefix]
            parts = url.path[len(prefix) + 1:].strip("/").split("/")
            namespace = None
            if len(parts) >= 3 and parts[0] == "namespaces":
                namespace, parts = parts[1], parts[2:]
            if len(parts) > 2 or not parts[0]:
                raise ApiError(404, "NotFound", f"no such path (subresources are not served): {url.path}")
            plural, name = parts[0], (parts[1] if len(parts) == 2 else None)
            kind = api._kind(plural)
            if kind.api_version != version or (namespace and not kind.namespaced):
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({url.path})")
            return plural, namespace, name, query

        def _serve(self, method: str) -> None:
            try:
                if method == "GET" and self.path.split("?")[0] in ("/healthz", "/readyz", "/livez"):
                    api.requests[(method, "healthz")] += 1
                    data = b"ok"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if method == "GET" and self.path.split("?")[0] == "/version":
                    api.requests[(method, "version")] += 1
                    self._send_json(200, {"major": "1", "minor": "35", "gitVersion": "v1.35.0-standin"})
                    return
                plural, namespace, name, query = self._route()
                watching = query.get("watch") in ("1", "true")
                api.requests[(method + (" watch" if watching else ""), plural)] += 1
                if method == "GET" and watching:
                    self._watch(plural, namespace, query)
                elif method == "GET" and name:
                    self._send_json(200, api.get(plural, name, namespace))
                elif method == "GET":
                    self._send_json(200, api.list_page(plural, namespace, int(query.get("limit") or 0),
                                                       query.get("continue", "")))
                elif method == "POST" and not name:
                    self._send_json(201, api.create(plural, self._body(), namespace))
                elif method == "PUT" and name:
                    body = self._body()
                    if (body.get("metadata") or {}).get("name") != name:
                        raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
                    self._send_json(200, api.update(plural, body, namespace))
                elif method == "PATCH" and name:
                    if "merge-patch" not in (self.headers.get("Content-Type") or ""):
                        raise ApiError(415, "UnsupportedMediaType", "only application/merge-patch+json is served")
                    self._send_json(200, api.patch(plural, name, self._body(), namespace))
                elif method == "DELETE" and name:
                    api.delete(plural, name, namespace)
                    self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                          "status": "Success", "details": {"name": name, "kind": plural}})
                else:
                    raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {self.path}")
            except ApiError as exc:
                self._send_json(exc.code, exc.status())

        def _watch(self, plural: str, namespace: str | None, query: dict[str, str]) -> None:
            if query.get("sendInitialEvents") in ("1", "true"):
                raise ApiError(400, "BadRequest", "sendInitialEvents is not served by this stand-in")
            with api._lock:
                generation = api._generation
                api.watches_opened += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events = api.watch_events(plural, namespace, query.get("resourceVersion", ""),
                                      query.get("allowWatchBookmarks") in ("1", "true"),
                                      float(query.get("timeoutSeconds") or 1800), generation)
            try:
                for event in events:
                    line = json.dumps(event).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._serve("PUT")

        def do_PATCH(self) -> None:  # noqa: N802
            self._serve("PATCH")

        def do_DELETE(self) -> None:  # noqa: N802
            self._serve("DELETE")

    return Handler


def _serve(argv: list[str] | None = None) -> int:
    """``serve``: start, write the kubeconfigs and the pid file, then fork into the background
    (the parent returns once the server answers); the server ends on SIGTERM or after
    ``--lifetime`` seconds, so a run that never stops it leaves nothing behind. ``stop``: end
    the server of a pid file."""
    import argparse
    import os
    import signal

    parser = argparse.ArgumentParser(prog="python -m tests.support.kube_apiserver")
    sub = parser.add_subparsers(dest="verb", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--dir", type=Path, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--lifetime", type=float, default=7200.0)
    stop = sub.add_parser("stop")
    stop.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    pidfile = args.dir / "kube-apiserver.pid"
    if args.verb == "stop":
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            return 0
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        pidfile.unlink(missing_ok=True)
        return 0

    api = KubeApiServer(args.dir, host=args.host, port=args.port)
    ready_r, ready_w = os.pipe()
    if os.fork():
        os.close(ready_w)
        with os.fdopen(ready_r) as ready:
            url = ready.read().strip()
        if not url:
            print("the stand-in API server did not start", flush=True)
            return 1
        print((args.dir / "kube-apiserver.json").read_text())
        return 0
    os.close(ready_r)
    os.setsid()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    api.start()
    api.write_kubeconfig(args.dir / "kubeconfig")
    api.write_embedded_kubeconfig(args.dir / "kubeconfig.embedded")
    (args.dir / "kube-apiserver.json").write_text(json.dumps({
        "url": api.url, "kubeconfig": str(args.dir / "kubeconfig"),
        "embedded_kubeconfig": str(args.dir / "kubeconfig.embedded"), "ca": str(api.pki.ca),
        "client_cert": str(api.pki.client_cert), "client_key": str(api.pki.client_key), "pid": os.getpid()}))
    pidfile.write_text(f"{os.getpid()}\n")
    with os.fdopen(ready_w, "w") as ready:
        ready.write(api.url + "\n")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    done.wait(args.lifetime)
    api.close()
    pidfile.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_serve())
