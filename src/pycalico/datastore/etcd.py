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
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pycalico.errors import (
    Compacted,
    DatastoreError,
    DatastoreUnavailable,
    KeyExists,
    KeyNotFound,
    OutcomeUnknown,
    RevisionConflict,
    ValidationError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# Module-level names: inside EtcdClient, ``list`` is the method.
Ops = list[dict[str, Any]]
KvLists = list[list["KeyValue"]]
Keys = list[str]

# gRPC status codes the gateway passes through that mean "try another member".
_RETRY_ELSEWHERE_CODES = {4, 8, 14}  # DeadlineExceeded, ResourceExhausted, Unavailable
_OUT_OF_RANGE = 11
# Answers that say the request was refused before it was proposed to raft: a write
# may go to another member. Anything else "unavailable" (request timed out, leader
# changed, server stopped) may have been proposed and can still be applied.
_NOT_TAKEN_MESSAGES = ("etcdserver: no leader", "etcdserver: not leader", "etcdserver: too many requests",
                       "etcdserver: unhealthy cluster")
_LEASE_EXISTS = "lease already exists"
FIRST_PAGE_SIZE = 50  # keys in a list's first page: 1 MB even of Calico's fullest blocks
# Later pages are sized from the ones before to about this many bytes of keys and values
# (base64, as the gateway sends them): 20,000 small blocks take 12 requests instead of 40
# at 500 keys a page (the agent's start at 20,000 nodes: 0.8 s sooner, docs/datastore.md), while
# fat values still come in bounded pages, below the 4 MiB a gRPC message may carry.
PAGE_BYTES = 2 * 1024 * 1024
PAGE_SIZE_RANGE = (20, 10_000)
# TCP keepalive on watch sockets (idle s, probe interval s, probes): a watch waits with no read
# timeout, since a quiet prefix sends nothing, and the gateway does not pass etcd's progress
# notifications on. Without probes a half-open connection (the member's host gone, a NAT entry
# dropped) would deliver no event again; with them it ends within about 25 s and is resumed.
WATCH_KEEPALIVE = (10, 5, 3)


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
        page_size: int | None = None,
        watch_keepalive: tuple[int, int, int] = WATCH_KEEPALIVE,
    ) -> None:
        if page_size is not None and page_size < 1:
            raise ValidationError("page_size", page_size, "a whole number of keys, 1 or more")
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
        self.page_size = page_size
        self.watch_keepalive = watch_keepalive
        # Every HTTP request sent (retries included), for tests and metrics.
        self.requests = 0
        self.requests_by_path: dict[str, int] = {}
        self.outcomes_unknown = 0  # writes answered with OutcomeUnknown (for callers to settle)
        # Watch streams etcd accepted, by prefix (not counted in ``requests``): tests and metrics.
        self.watches_opened: dict[str, int] = {}

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

    def _count_watch(self, prefix: str) -> None:
        with self._lock:
            self.watches_opened[prefix] = self.watches_opened.get(prefix, 0) + 1

    def _count(self, path: str) -> None:
        with self._lock:
            self.requests += 1
            self.requests_by_path[path] = self.requests_by_path.get(path, 0) + 1

    def _exchange(self, endpoint: str, path: str, payload: bytes) -> tuple[int, bytes]:
        """One request on this thread's connection to ``endpoint``. Raises _NotSent when
        no byte of the request can have reached the server, _MaybeSent otherwise."""
        conns = self._connections()
        conn = conns.get(endpoint)
        if conn is not None and not _idle_and_open(conn):
            # etcd closed it (restart, idle timeout) or sent something unasked: found
            # before a byte of this request was written, so a fresh connection is safe.
            conn.close()
            conns.pop(endpoint, None)
            conn = None
        fresh = conn is None
        if conn is None:
            conn = self._connect(endpoint, self.connect_timeout)
            try:
                conn.connect()  # TCP and the whole TLS handshake, before the request
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise _NotSent(exc) from exc
            assert conn.sock is not None
            conn.sock.settimeout(self.timeout)
            conns[endpoint] = conn
        self._count(path)
        try:
            conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            conns.pop(endpoint, None)
            if fresh and _handshake_refused(exc):
                raise _NotSent(exc) from exc
            raise _MaybeSent(exc, fresh) from exc
        except BaseException:
            conn.close()
            conns.pop(endpoint, None)
            raise
        return resp.status, data

    def _unknown(self, path: str, body: dict[str, Any], endpoint: str, detail: str) -> OutcomeUnknown:
        with self._lock:
            self.outcomes_unknown += 1
        return OutcomeUnknown(_operation(path), _written_keys(path, body), endpoint, detail)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the gateway, failing over between endpoints. While a member
        answers "unavailable" (e.g. during a leader election) keep retrying for up
        to ``timeout`` seconds; when none answers at all, fail at once.

        Reads, deletes and other requests whose repetition changes nothing
        (``replay_safe``) are retried and failed over whatever went wrong. A write is
        sent to another member (or again) only when it provably was not taken: the
        connection could not be made (refused, DNS, TLS handshake), a kept-alive
        connection was found closed before the request was written, or etcd answered
        that it did not take it ("no leader", "too many requests"). Any other failure
        after its first byte was sent raises OutcomeUnknown. So DatastoreUnavailable
        from a write means it was not applied."""
        replayable = replay_safe(path, body)
        payload = json.dumps(body).encode()
        deadline = time.monotonic() + self.timeout
        while True:
            errors: list[str] = []
            retryable = False
            for endpoint in self._order():
                try:
                    status, data = self._exchange(endpoint, path, payload)
                except _NotSent as exc:
                    errors.append(f"{endpoint}: {_describe_os_error(exc.cause)}")
                    continue
                except _MaybeSent as exc:
                    if not replayable:
                        raise self._unknown(path, body, endpoint, _describe_os_error(exc.cause)) from None
                    if not exc.fresh and not isinstance(exc.cause, TimeoutError):
                        # A kept-alive connection that died under the request: once more afresh.
                        try:
                            status, data = self._exchange(endpoint, path, payload)
                        except (_NotSent, _MaybeSent) as again:
                            errors.append(f"{endpoint}: {_describe_os_error(again.cause)}")
                            continue
                    else:
                        errors.append(f"{endpoint}: {_describe_os_error(exc.cause)}")
                        continue
                decoded = _decode(data)
                if status == 200:
                    if endpoint != self.endpoints[self._preferred]:
                        with self._lock:
                            self._preferred = self.endpoints.index(endpoint)
                    return decoded
                code = int(decoded.get("code", 0) or 0)
                message = str(decoded.get("message") or decoded.get("error") or f"HTTP {status}")
                if code in _RETRY_ELSEWHERE_CODES or status in (502, 503):
                    if not replayable and not any(m in message for m in _NOT_TAKEN_MESSAGES):
                        # e.g. "request timed out": proposed, and may still be applied.
                        raise self._unknown(path, body, endpoint, message)
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

    def list(self, prefix: str, *, revision: int = 0, keys_only: bool = False) -> tuple[list[KeyValue], int]:
        """All keys under ``prefix``, and the store revision they were read at. Read
        in pages, all at one revision (see ``pages``)."""
        attempts = 4
        for attempt in range(1, attempts + 1):
            try:
                pages = self.pages(prefix, revision=revision, keys_only=keys_only)
                return [kv for page in pages for kv in page], pages.revision
            except Compacted:
                if revision or attempt == attempts:
                    raise
                # compacted past the pinned revision mid-list: start again at a newer one
        raise AssertionError("unreachable")

    def pages(self, prefix: str, *, revision: int = 0, page_size: int | None = None,
              keys_only: bool = False) -> Pages:
        """The keys under ``prefix`` page by page, every page at the revision of the
        first (fetched at once, so ``.revision`` is known before iterating). Pages hold
        ``page_size`` keys if given (here or to the client), else about ``PAGE_BYTES``.
        With ``keys_only`` the values stay on the server (each KeyValue's value is "")."""
        return Pages(self, prefix, revision, page_size or self.page_size, keys_only=keys_only)

    def keys(self, prefix: str) -> Keys:
        """The keys under ``prefix`` without their values (``list`` with keys only): what a
        caller needs that only asks which keys exist (a fraction of the bytes etcd encodes
        and sends for 20,000 IPAM blocks)."""
        return [kv.key for kv in self.list(prefix, keys_only=True)[0]]

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
        compare: Ops,
        success: Ops,
        failure: Ops | None = None,
    ) -> dict[str, Any]:
        return self.call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure or []})

    def read_many(self, ranges: Sequence[tuple[str, bool]]) -> KvLists:
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

    def existing(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` exist: one round trip, the values stay on the server (at most
        etcd's ``--max-txn-ops``, 128 by default, keys per call)."""
        resp = self.txn(compare=[], success=[{"request_range": {"key": _b64(key), "keys_only": True}} for key in keys])
        return {_unb64(raw.get("key")).decode() for item in resp.get("responses") or []
                for raw in (item.get("response_range") or {}).get("kvs") or []}

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

    def lease_grant(self, ttl: int, *, lease_id: int = 0) -> int:
        """Grant a lease with an ID chosen here (or ``lease_id``), so that a grant whose
        reply was lost is settled exactly: the ID exists (ours: granted) or a second grant
        of the same ID either succeeds or finds it granted by the first. Never two leases."""
        chosen = lease_id or random.SystemRandom().randrange(1, 1 << 62)
        uncertain: OutcomeUnknown | None = None
        for _ in range(5):
            try:
                resp = self.call("/v3/lease/grant", {"TTL": str(ttl), "ID": str(chosen)})
                return int(resp["ID"])
            except OutcomeUnknown as exc:
                uncertain = exc
            except DatastoreError as exc:
                if _LEASE_EXISTS not in str(exc):
                    raise
                if uncertain is not None:
                    return chosen  # our first grant landed
                if lease_id:
                    raise
                chosen = random.SystemRandom().randrange(1, 1 << 62)  # an ID taken by someone else
                continue
            try:
                if self.lease_time_to_live(chosen) > 0:
                    return chosen
            except DatastoreError:
                time.sleep(0.2)
            # not granted (yet): the same ID again cannot make a second lease
        assert uncertain is not None
        raise uncertain

    def lease_time_to_live(self, lease_id: int) -> int:
        """Seconds left on a lease; -1 when there is no such lease."""
        resp = self.call("/v3/lease/timetolive", {"ID": str(lease_id)})
        return int(resp.get("TTL", -1) or 0)

    def leases(self) -> Sequence[int]:
        """The IDs of every live lease."""
        resp = self.call("/v3/lease/leases", {})
        return [int(item["ID"]) for item in resp.get("leases") or []]

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


class _NotSent(Exception):
    """No byte of the request can have reached a server."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _MaybeSent(Exception):
    """The request was (at least partly) written; the server may have acted on it."""

    def __init__(self, cause: BaseException, fresh: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.fresh = fresh


def _idle_and_open(conn: http.client.HTTPConnection) -> bool:
    """A kept-alive connection is usable when nothing is waiting to be read on it:
    between requests etcd sends nothing, so readable means closed (EOF, a reset, a TLS
    close_notify) or out of step. Checked before the request is written."""
    sock = conn.sock
    if sock is None:
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return False
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    try:
        return not poller.poll(0)
    except OSError:
        return False


# TLS alerts a server sends only while refusing the handshake. With TLS 1.3 the client
# finishes its side before the server has checked the client certificate, so the refusal
# arrives on the first read; no request on such a connection was ever accepted. A bare
# EOF or reset there is not counted: it cannot be told from a crash after the request.
_HANDSHAKE_ALERTS = ("ALERT_BAD_CERTIFICATE", "ALERT_UNKNOWN_CA", "ALERT_CERTIFICATE_REQUIRED",
                     "ALERT_CERTIFICATE_UNKNOWN", "ALERT_HANDSHAKE_FAILURE", "ALERT_ACCESS_DENIED",
                     "ALERT_DECRYPT_ERROR", "ALERT_UNSUPPORTED_CERTIFICATE", "ALERT_CERTIFICATE_EXPIRED",
                     "ALERT_CERTIFICATE_REVOKED")


def _handshake_refused(exc: BaseException) -> bool:
    reason = str(getattr(exc, "reason", "") or "")
    return isinstance(exc, ssl.SSLError) and any(a in reason for a in _HANDSHAKE_ALERTS)


# Paths whose repetition changes nothing a caller relies on: reads, and writes that
# are idempotent by construction. Everything else (put, txn with a put or delete,
# lease grant, unknown paths) is a write that is never resent once it may have left.
_REPLAY_SAFE_PATHS = {
    "/v3/kv/range": "read",
    "/v3/watch": "read (watch create)",
    "/v3/lease/timetolive": "read",
    "/v3/lease/leases": "read",
    "/v3/maintenance/status": "read",
    "/v3/kv/deleterange": "delete: a repeat deletes nothing more (its count may then read 0)",
    "/v3/lease/keepalive": "refresh: a repeat refreshes again",
    "/v3/lease/revoke": "delete: a repeat finds the lease gone",
    "/v3/kv/compaction": "a repeat finds the revision compacted",
}


def replay_safe(path: str, body: dict[str, Any]) -> bool:
    """True for requests that may be retried and failed over after they may have been
    applied (see ``_REPLAY_SAFE_PATHS``); a txn is safe only when every op is a range."""
    if path == "/v3/kv/txn":
        ops = list(body.get("success") or []) + list(body.get("failure") or [])
        return all(set(op) == {"request_range"} for op in ops)
    return path in _REPLAY_SAFE_PATHS


def _operation(path: str) -> str:
    return {"/v3/kv/put": "put", "/v3/kv/txn": "transaction", "/v3/lease/grant": "lease grant"}.get(path, path)


def _written_keys(path: str, body: dict[str, Any]) -> list[str]:
    """The keys a write touches, for its error message (never values)."""
    def key_of(raw: dict[str, Any]) -> str:
        return _unb64(raw.get("key")).decode(errors="replace")

    if path == "/v3/kv/put":
        return [key_of(body)]
    if path == "/v3/lease/grant":
        return [f"lease {int(body.get('ID', 0) or 0):x}"]
    if path == "/v3/kv/txn":
        out = []
        for op in body.get("success") or []:
            for kind in ("request_put", "request_delete_range"):
                if kind in op:
                    out.append(key_of(op[kind]))
        return out
    return []


def _decode(data: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(data) if data else {}
    except ValueError:
        decoded = {"error": data[:200].decode(errors="replace")}
    return decoded if isinstance(decoded, dict) else {"error": str(decoded)[:200]}


def _first_range_kv(resp: dict[str, Any]) -> KeyValue | None:
    for item in resp.get("responses") or []:
        kvs = (item.get("response_range") or {}).get("kvs") or []
        if kvs:
            return KeyValue.from_gateway(kvs[0])
    return None


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"server certificate not trusted by the configured CA ({exc.verify_message})"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return ("connection closed by the server without an answer (on a new connection this is how a "
                "refused TLS client certificate can look: is it signed by the cluster CA?)")
    if isinstance(exc, ssl.SSLError):
        return (f"TLS handshake failed ({exc.reason or type(exc).__name__}); "
                "check that the client certificate is signed by the cluster CA")
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class Pages:
    """The keys under a prefix as pages: a range with ``limit``, continued after the last
    key (+ "\\0"), every page pinned at the revision of the first. ``page_size`` keys per
    page, or with ``None`` a first page of ``FIRST_PAGE_SIZE`` keys and then as many as
    make about ``PAGE_BYTES`` at the average size read so far. Iterate once."""

    def __init__(self, client: EtcdClient, prefix: str, revision: int, page_size: int | None, *,
                 keys_only: bool = False) -> None:
        self._client = client
        self._end = _b64(prefix_range_end(prefix))
        self._fixed = page_size is not None
        self._page_size = page_size or FIRST_PAGE_SIZE
        self._keys_only = keys_only
        self._bytes = 0
        self.requests = 0
        self.count = 0
        first, more, self.revision = self._fetch(prefix.encode(), revision)
        self._first: list[KeyValue] | None = first
        self._more = more

    def _fetch(self, start: bytes, revision: int) -> tuple[list[KeyValue], bool, int]:
        body: dict[str, Any] = {"key": _b64(start), "range_end": self._end, "limit": str(self._page_size)}
        if revision:
            body["revision"] = str(revision)
        if self._keys_only:
            body["keys_only"] = True
        resp = self._client.call("/v3/kv/range", body)
        self.requests += 1
        raws = resp.get("kvs") or []
        kvs = [KeyValue.from_gateway(raw) for raw in raws]
        self.count += len(kvs)
        if not self._fixed and raws:
            self._bytes += sum(len(raw.get("key") or "") + len(raw.get("value") or "") for raw in raws)
            low, high = PAGE_SIZE_RANGE
            self._page_size = max(low, min(high, PAGE_BYTES * self.count // max(1, self._bytes)))
        return kvs, bool(resp.get("more")) and bool(kvs), revision or int(resp["header"]["revision"])

    def __iter__(self) -> Iterator[list[KeyValue]]:
        """While the caller works on a page, the next one is fetched by one helper thread
        (its own connection), so etcd's encoding and the network overlap the caller's
        parsing: at most two pages are held at a time."""
        page, self._first = self._first, None
        if page is None:
            return
        if not self._more:
            yield page
            return
        with ThreadPoolExecutor(1, thread_name_prefix="etcd-pages") as prefetch:
            following: Future[tuple[list[KeyValue], bool, int]] | None = None
            try:
                while True:
                    following = prefetch.submit(self._fetch, page[-1].key.encode() + b"\0", self.revision) \
                        if self._more else None
                    yield page
                    if following is None:
                        return
                    page, self._more, _ = following.result()
                    following = None
            finally:
                if following is not None:  # the caller stopped early
                    following.cancel()


def _keep_alive(sock: socket.socket, probes: tuple[int, int, int]) -> None:
    idle, interval, count = probes
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    # Bytes the peer never acknowledges (the TLS layer's own, too) stop the probes; this bounds them
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, (idle + interval * count) * 1000)


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
                _keep_alive(conn.sock, self._client.watch_keepalive)
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
            self._client._count_watch(self._prefix)
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

