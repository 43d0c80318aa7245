"""etcd v3 client over the JSON gateway, stdlib only.

Why not etcd3gw: its import costs ~250 ms (futurist, debtcollector, requests),
``requests`` honours ``REQUESTS_CA_BUNDLE`` over the CA we pass, and it has no
endpoint failover, no watch resume and no compaction signal. The gateway API is
small; ``http.client`` + ``ssl`` import in ~45 ms, which matters for the CNI
in-process path. See docs/datastore.md for the measurements.

This module knows nothing of Calico: keys and values are opaque strings.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pycalico.errors import (
    Compacted,
    DatastoreError,
    DatastoreUnavailable,
    KeyExists,
    KeyNotFound,
    RevisionConflict,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# gRPC status codes the gateway passes through that mean "try another member".
_RETRY_ELSEWHERE_CODES = {4, 8, 14}  # DeadlineExceeded, ResourceExhausted, Unavailable
_OUT_OF_RANGE = 11


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_range_end(prefix: str) -> bytes:
    """The etcd range_end that selects every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    mod_revision: int
    create_revision: int
    version: int
    lease: int = 0

    def json(self) -> Any:
        return json.loads(self.value)

    @classmethod
    def from_gateway(cls, raw: dict[str, Any]) -> KeyValue:
        return cls(
            key=_unb64(raw.get("key")).decode(),
            value=_unb64(raw.get("value")).decode(),
            mod_revision=int(raw.get("mod_revision", 0)),
            create_revision=int(raw.get("create_revision", 0)),
            version=int(raw.get("version", 0)),
            lease=int(raw.get("lease", 0)),
        )


@dataclass(frozen=True)
class WatchEvent:
    """One change. ``kind`` is "put" or "delete"; for a delete ``kv.value`` is the
    previous value when etcd still had it."""

    kind: str
    kv: KeyValue
    prev: KeyValue | None = None


@dataclass(frozen=True)
class TlsConfig:
    ca_file: str
    cert_file: str
    key_file: str


class EtcdClient:
    """A client for several etcd endpoints, failing over between them.

    Thread-safe: each thread keeps its own connections.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        tls: TlsConfig | None = None,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise DatastoreError("no etcd endpoints configured")
        self.endpoints: list[str] = list(endpoints)
        self.tls = tls
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._ssl_context = self._make_ssl_context(tls) if tls else None
        self._local = threading.local()
        self._preferred = 0
        self._lock = threading.Lock()

    # ---- transport -------------------------------------------------------------------

    @staticmethod
    def _make_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
        # An explicit CA file only: environment bundles (REQUESTS_CA_BUNDLE,
        # CURL_CA_BUNDLE, SSL_CERT_FILE) must never replace the cluster CA.
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(cafile=tls.ca_file)
            ctx.load_cert_chain(certfile=tls.cert_file, keyfile=tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            # Never echo file contents; the paths and the reason are enough.
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
            raise DatastoreError(
                f"cannot load etcd TLS files (ca={tls.ca_file}, cert={tls.cert_file}, "
                f"key={tls.key_file}): {reason}"
            ) from None
        ctx.check_hostname = True
        return ctx

    def _connect(self, endpoint: str, timeout: float | None) -> http.client.HTTPConnection:
        parts = urlsplit(endpoint)
        host = parts.hostname or "127.0.0.1"
        if parts.scheme == "https":
            if self._ssl_context is None:
                raise DatastoreError(f"endpoint {endpoint} is https but no TLS files are configured")
            return http.client.HTTPSConnection(
                host, parts.port or 2379, timeout=timeout, context=self._ssl_context
            )
        return http.client.HTTPConnection(host, parts.port or 2379, timeout=timeout)

    def _connections(self) -> dict[str, http.client.HTTPConnection]:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = {}
            self._local.conns = conns
        return conns

    def _order(self) -> list[str]:
        start = self._preferred
        return self.endpoints[start:] + self.endpoints[:start]

    def _post_once(self, endpoint: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conns = self._connections()
        conn = conns.get(endpoint)
        fresh = conn is None
        if conn is None:
            conn = self._connect(endpoint, self.connect_timeout)
            conns[endpoint] = conn
        payload = json.dumps(body).encode()
        try:
            if conn.sock is None:
                conn.connect()
                conn.sock.settimeout(self.timeout)
            conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            conns.pop(endpoint, None)
            if fresh or isinstance(exc, TimeoutError):
                raise
            # A kept-alive connection the server closed (a restarted etcd answers a
            # stale TLS session with EOF or a reset): one retry on a new connection.
            return self._post_once(endpoint, path, body)
        except BaseException:
            conn.close()
            conns.pop(endpoint, None)
            raise
        try:
            decoded = json.loads(data) if data else {}
        except ValueError:
            decoded = {"error": data[:200].decode(errors="replace")}
        return resp.status, decoded

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the gateway, failing over between endpoints. While a member
        answers "unavailable" (e.g. during a leader election) keep retrying for up
        to ``timeout`` seconds; when none answers at all, fail at once."""
        deadline = time.monotonic() + self.timeout
        while True:
            errors: list[str] = []
            retryable = False
            for endpoint in self._order():
                try:
                    status, decoded = self._post_once(endpoint, path, body)
                except (OSError, http.client.HTTPException) as exc:
                    errors.append(f"{endpoint}: {_describe_os_error(exc)}")
                    continue
                if status == 200:
                    if endpoint != self.endpoints[self._preferred]:
                        with self._lock:
                            self._preferred = self.endpoints.index(endpoint)
                    return decoded
                code = int(decoded.get("code", 0) or 0)
                message = str(decoded.get("message") or decoded.get("error") or f"HTTP {status}")
                if code in _RETRY_ELSEWHERE_CODES or status in (502, 503):
                    errors.append(f"{endpoint}: {message}")
                    retryable = True
                    continue
                if code == _OUT_OF_RANGE and "compacted" in message:
                    raise Compacted(int(body.get("revision", 0) or 0))
                raise DatastoreError(f"etcd error from {endpoint}: {message}")
            if not retryable or time.monotonic() >= deadline:
                raise DatastoreUnavailable(self.endpoints, "; ".join(errors))
            time.sleep(0.1)

    def close(self) -> None:
        for conn in self._connections().values():
            conn.close()
        self._local.conns = {}

    # ---- key/value -------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        resp = self.call("/v3/kv/range", {"key": _b64(key)})
        kvs = resp.get("kvs") or []
        return KeyValue.from_gateway(kvs[0]) if kvs else None

    def list(self, prefix: str, *, revision: int = 0) -> tuple[list[KeyValue], int]:
        """All keys under ``prefix``, and the store revision they were read at."""
        body: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(prefix_range_end(prefix))}
        if revision:
            body["revision"] = str(revision)
        resp = self.call("/v3/kv/range", body)
        kvs = [KeyValue.from_gateway(raw) for raw in resp.get("kvs") or []]
        return kvs, int(resp["header"]["revision"])

    def revision(self) -> int:
        resp = self.call("/v3/kv/range", {"key": _b64("\0"), "count_only": True})
        return int(resp["header"]["revision"])

    def put(self, key: str, value: str, *, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        resp = self.call("/v3/kv/put", body)
        return int(resp["header"]["revision"])

    def create(self, key: str, value: str, *, lease: int = 0) -> int:
        """Put only if the key does not exist; raises KeyExists with the current value."""
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        resp = self.txn(
            compare=[{"key": _b64(key), "result": "EQUAL", "target": "VERSION", "version": "0"}],
            success=[{"request_put": put}],
            failure=[{"request_range": {"key": _b64(key)}}],
        )
        if not resp.get("succeeded"):
            raise KeyExists(key, _first_range_kv(resp))
        return int(resp["header"]["revision"])

    def update(self, key: str, value: str, mod_revision: int, *, lease: int = 0) -> int:
        """Put only if the key is unchanged since ``mod_revision``."""
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        resp = self.txn(
            compare=[{"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": str(mod_revision)}],
            success=[{"request_put": put}],
            failure=[{"request_range": {"key": _b64(key)}}],
        )
        if not resp.get("succeeded"):
            if _first_range_kv(resp) is None:
                raise KeyNotFound(key)
            raise RevisionConflict(key)
        return int(resp["header"]["revision"])

    def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        """Delete one key. With ``mod_revision`` only if unchanged (RevisionConflict
        otherwise). Returns False when the key was already gone."""
        if mod_revision is None:
            resp = self.call("/v3/kv/deleterange", {"key": _b64(key)})
            return int(resp.get("deleted", 0)) > 0
        resp = self.txn(
            compare=[{"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": str(mod_revision)}],
            success=[{"request_delete_range": {"key": _b64(key)}}],
            failure=[{"request_range": {"key": _b64(key)}}],
        )
        if not resp.get("succeeded"):
            if _first_range_kv(resp) is None:
                return False
            raise RevisionConflict(key)
        return True

    def delete_prefix(self, prefix: str) -> int:
        resp = self.call(
            "/v3/kv/deleterange", {"key": _b64(prefix), "range_end": _b64(prefix_range_end(prefix))}
        )
        return int(resp.get("deleted", 0))

    def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return self.call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure or []})

    def read_many(self, ranges: Sequence[tuple[str, bool]]) -> list[list[KeyValue]]:
        """Several reads in one round trip, at one revision. Each entry is
        ``(key, is_prefix)``; the answer lists the matching key-values per entry."""
        ops = []
        for key, is_prefix in ranges:
            rng: dict[str, Any] = {"key": _b64(key)}
            if is_prefix:
                rng["range_end"] = _b64(prefix_range_end(key))
            ops.append({"request_range": rng})
        resp = self.txn(compare=[], success=ops)
        return [[KeyValue.from_gateway(raw) for raw in (item.get("response_range") or {}).get("kvs") or []]
                for item in resp.get("responses") or []]

    def commit(self, expected: dict[str, int], puts: dict[str, str],
               deletes: Sequence[str] = ()) -> tuple[bool, dict[str, KeyValue | None]]:
        """Atomically write ``puts`` and ``deletes`` if every key in ``expected`` is at
        its mod_revision (0 = must not exist). On failure returns the current
        key-values of the expected keys, so the caller can retry without re-reading."""
        compare = []
        for key, rev in expected.items():
            if rev:
                compare.append({"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": str(rev)})
            else:
                compare.append({"key": _b64(key), "result": "EQUAL", "target": "VERSION", "version": "0"})
        success: list[dict[str, Any]] = [{"request_put": {"key": _b64(k), "value": _b64(v)}} for k, v in puts.items()]
        success += [{"request_delete_range": {"key": _b64(k)}} for k in deletes]
        failure = [{"request_range": {"key": _b64(k)}} for k in expected]
        resp = self.txn(compare, success, failure)
        if resp.get("succeeded"):
            return True, {}
        current: dict[str, KeyValue | None] = {}
        for key, item in zip(expected, resp.get("responses") or [], strict=False):
            kvs = (item.get("response_range") or {}).get("kvs") or []
            current[key] = KeyValue.from_gateway(kvs[0]) if kvs else None
        return False, current

    def compact(self, revision: int) -> None:
        self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    # ---- leases ----------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> int:
        resp = self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(resp["ID"])

    def lease_keepalive(self, lease_id: int) -> int:
        """Refresh a lease; returns the remaining TTL, 0 when the lease is gone."""
        resp = self.call("/v3/lease/keepalive", {"ID": str(lease_id)})
        result = resp.get("result", resp)
        return int(result.get("TTL", 0) or 0)

    def lease_revoke(self, lease_id: int) -> None:
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease_id)})
        except DatastoreError as exc:
            if "not found" not in str(exc):
                raise

    # ---- watch -----------------------------------------------------------------------

    def watch_stream(self, prefix: str, start_revision: int) -> WatchStream:
        return WatchStream(self, prefix, start_revision)


def _first_range_kv(resp: dict[str, Any]) -> KeyValue | None:
    for item in resp.get("responses") or []:
        kvs = (item.get("response_range") or {}).get("kvs") or []
        if kvs:
            return KeyValue.from_gateway(kvs[0])
    return None


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"server certificate not trusted by the configured CA ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return (f"TLS handshake failed ({exc.reason or type(exc).__name__}); "
                "check that the client certificate is signed by the cluster CA")
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class WatchStream:
    """One watch request on one endpoint. Iterating yields lists of events;
    it ends (StopIteration) when the stream drops and raises Compacted when the
    start revision is gone. ``close()`` from another thread ends it."""

    def __init__(self, client: EtcdClient, prefix: str, start_revision: int) -> None:
        self._client = client
        self._prefix = prefix
        self._start = start_revision
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._closed = False

    def open(self) -> None:
        body = {
            "create_request": {
                "key": _b64(self._prefix),
                "range_end": _b64(prefix_range_end(self._prefix)),
                "start_revision": str(self._start),
                "prev_kv": True,
                "progress_notify": True,
            }
        }
        errors: list[str] = []
        for endpoint in self._client._order():
            conn = self._client._connect(endpoint, self._client.connect_timeout)
            try:
                conn.connect()
                assert conn.sock is not None
                conn.sock.settimeout(None)
                conn.request("POST", "/v3/watch", body=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                errors.append(f"{endpoint}: {_describe_os_error(exc)}")
                continue
            if resp.status != 200:
                conn.close()
                errors.append(f"{endpoint}: HTTP {resp.status}")
                continue
            self._conn, self._resp = conn, resp
            return
        raise DatastoreUnavailable(self._client.endpoints, "; ".join(errors))

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        if self._resp is None:
            self.open()
        assert self._resp is not None
        while not self._closed:
            try:
                line = self._resp.readline()
            except (OSError, http.client.HTTPException, ValueError, AttributeError):
                return
            if not line:
                return
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                return
            if "error" in message:
                return
            result = message.get("result") or {}
            compact_rev = int(result.get("compact_revision", 0) or 0)
            if compact_rev:
                raise Compacted(compact_rev)
            if result.get("canceled"):
                return
            events = []
            for raw in result.get("events") or []:
                kind = "delete" if raw.get("type") == "DELETE" else "put"
                kv = KeyValue.from_gateway(raw["kv"])
                prev = KeyValue.from_gateway(raw["prev_kv"]) if raw.get("prev_kv") else None
                if kind == "delete" and prev is not None:
                    kv = KeyValue(kv.key, prev.value, kv.mod_revision, prev.create_revision, 0)
                events.append(WatchEvent(kind, kv, prev))
            if events:
                yield events

    def close(self) -> None:
        self._closed = True
        if self._conn is not None and self._conn.sock is not None:
            try:
                self._conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._conn is not None:
            self._conn.close()


def retry_on_conflict(operation: Callable[[], T], *, attempts: int = 100) -> T:
    """Run a read-modify-CAS ``operation`` until it does not lose a race."""
    for _ in range(attempts - 1):
        try:
            return operation()
        except (RevisionConflict, KeyExists):
            continue
    return operation()

