"""Settling writes whose outcome is unknown (``OutcomeUnknown``) by reading.

The client never resends a write that may have been applied. These helpers are for
callers whose write can be recognised afterwards: a create whose value is unique to
this writer (it carries a uid or a nanosecond sequence number), or a put whose
repetition is harmless (a key only this caller writes, set to a fixed value).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from pycalico.datastore.etcd import EtcdClient, KeyValue
from pycalico.errors import DatastoreError, KeyExists, OutcomeUnknown

T = TypeVar("T")
# Reads that settle a write are retried for this long (etcd electing a leader).
SETTLE_SECONDS = 15.0


def read_to_settle(uncertain: OutcomeUnknown, read: Callable[[], T], *, seconds: float = SETTLE_SECONDS) -> T:
    """``read()``, retried while etcd is unreachable; re-raises ``uncertain`` when it never answers."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return read()
        except OutcomeUnknown:
            raise
        except DatastoreError:
            if time.monotonic() >= deadline:
                raise uncertain from None
            time.sleep(0.2)


def current(client: EtcdClient, keys: Sequence[str], uncertain: OutcomeUnknown) -> list[KeyValue | None]:
    """The present values of ``keys`` (one round trip), to see whether a write landed."""
    found = read_to_settle(uncertain, lambda: client.read_many([(k, False) for k in keys]))
    return [kvs[0] if kvs else None for kvs in found]


def create_settled(client: EtcdClient, key: str, value: str, *, attempts: int = 10) -> int:
    """``client.create`` for a value unique to this writer. A lost reply is settled by
    reading the key: our value there → created; absent → not applied, created again (the
    create-if-absent compare makes the two attempts exclusive). Returns the revision the
    key holds; KeyExists when another value is there."""
    uncertain: OutcomeUnknown | None = None
    for _ in range(attempts):
        try:
            return client.create(key, value)
        except KeyExists as exc:
            existing = exc.existing if isinstance(exc.existing, KeyValue) else None
            if uncertain is not None and existing is not None and existing.value == value:
                return existing.mod_revision  # the first attempt landed after our read
            raise
        except OutcomeUnknown as exc:
            uncertain = exc
        [kv] = current(client, [key], uncertain)
        if kv is not None:
            if kv.value == value:
                return kv.mod_revision
            raise KeyExists(key, kv)
    assert uncertain is not None
    raise uncertain


def put_settled(client: EtcdClient, key: str, value: str, *, attempts: int = 10) -> None:
    """``client.put`` for a put whose repetition is harmless: after a lost reply the key
    is read; holding ``value`` settles it, anything else means put again."""
    uncertain: OutcomeUnknown | None = None
    for _ in range(attempts):
        try:
            client.put(key, value)
            return
        except OutcomeUnknown as exc:
            uncertain = exc
        [kv] = current(client, [key], uncertain)
        if kv is not None and kv.value == value:
            return
    assert uncertain is not None
    raise uncertain
