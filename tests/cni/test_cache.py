"""The fast path's read cache against a real etcd: mirrored or remembered, written
through, refreshed by lost compares, and never the source of "this block or handle
is gone"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pycalico.cni.cache import CachingEtcdClient
from pycalico.datastore.etcd import EtcdClient
from pycalico.model import keys
from tests.support.etcd import EtcdCluster
from tests.support.poll import wait_until

BLOCK = keys.block_key("10.9.0.0/26")
AFFINITY = keys.affinity_key("node-a", "10.9.0.0/26")
HANDLE = keys.handle_key("net.abc")


@pytest.fixture
def cached(etcd: EtcdClient, etcd_cluster: EtcdCluster) -> Iterator[CachingEtcdClient]:
    client = CachingEtcdClient(etcd_cluster.endpoints, etcd_cluster.tls()).start_mirror()
    try:
        assert wait_until(lambda: all(w.synced.is_set() for w in client._watchers), timeout=10)
        yield client
    finally:
        client.stop_mirror()
        client.close()


def test_outside_writes_reach_the_mirror(cached: CachingEtcdClient, etcd: EtcdClient) -> None:
    etcd.put(AFFINITY, "v1")
    assert wait_until(lambda: [kv.value for kv in cached.read_many([(AFFINITY, False)])[0]] == ["v1"], timeout=10)
    hits = cached.hits
    assert cached.get(AFFINITY).value == "v1"  # type: ignore[union-attr]
    assert cached.hits == hits + 1
    etcd.delete(AFFINITY)
    assert wait_until(lambda: cached.read_many([(AFFINITY, False)]) == [[]], timeout=10)
    misses = cached.misses
    assert cached.get(AFFINITY) is None and cached.misses == misses  # a seen deletion: from memory


def test_blocks_are_remembered_not_watched(cached: CachingEtcdClient, etcd: EtcdClient) -> None:
    etcd.put(BLOCK, "v1")
    misses = cached.misses
    assert [kv.value for kv in cached.read_many([(BLOCK, False), (AFFINITY, False)])[0]] == ["v1"]
    assert cached.misses == misses + 1  # first read: etcd
    hits = cached.hits
    assert cached.get(BLOCK).value == "v1" and cached.hits == hits + 1  # type: ignore[union-attr]
    assert cached.read_many([(BLOCK, False)])[0][0].value == "v1" and cached.hits == hits + 2
    # Written elsewhere: the remembered copy is stale until a compare on it fails.
    stale = cached.get(BLOCK)
    etcd.put(BLOCK, "v2")
    assert stale is not None
    ok, current = cached.commit({BLOCK: stale.mod_revision}, {BLOCK: "mine"})
    assert not ok and current[BLOCK].value == "v2"  # type: ignore[union-attr]
    assert cached.get(BLOCK).value == "v2"  # type: ignore[union-attr]
    # Deleted here: "gone" is asked of etcd, which may know better.
    fresh = cached.get(BLOCK)
    assert fresh is not None and cached.commit({BLOCK: fresh.mod_revision}, {}, [BLOCK])[0]
    etcd.put(BLOCK, "recreated elsewhere")
    assert cached.get(BLOCK).value == "recreated elsewhere"  # type: ignore[union-attr]


def test_a_lost_compare_refreshes_the_cache(cached: CachingEtcdClient, etcd: EtcdClient) -> None:
    ok, _ = cached.commit({HANDLE: 0}, {HANDLE: "mine"})
    assert ok
    mine = cached.get(HANDLE)
    assert mine is not None and mine.value == "mine"  # remembered: written here
    etcd.put(HANDLE, "theirs")  # handles are not watched: the cache is now stale
    ok, current = cached.commit({HANDLE: mine.mod_revision}, {HANDLE: "again"})
    theirs = current[HANDLE]
    assert not ok and theirs is not None and theirs.value == "theirs"
    assert cached.get(HANDLE).value == "theirs"  # type: ignore[union-attr]


def test_a_gone_handle_is_always_asked_of_etcd(cached: CachingEtcdClient, etcd: EtcdClient) -> None:
    ok, _ = cached.commit({HANDLE: 0}, {HANDLE: "mine"})
    assert ok
    rev = cached.get(HANDLE).mod_revision  # type: ignore[union-attr]
    assert cached.commit({HANDLE: rev}, {}, [HANDLE])[0]
    etcd.put(HANDLE, "recreated elsewhere")
    misses = cached.misses
    got = cached.get(HANDLE)
    assert got is not None and got.value == "recreated elsewhere"
    assert cached.misses == misses + 1
