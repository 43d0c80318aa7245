"""50,000 Calico-sized IPAM blocks under one prefix: read in pages at one revision.

``list``, a PrefixWatcher's resync and ``IPAM.check`` read the prefix page by page
(range + limit, continued after the last key, pinned at the first page's revision);
the number of requests is logged and asserted, a write during the read does not
tear the snapshot, and iterating the pages never holds the whole prefix at once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pycalico.datastore.etcd import FIRST_PAGE_SIZE, PAGE_BYTES, KeyValue, WatchEvent, _b64
from pycalico.datastore.watch import PrefixWatcher
from pycalico.ipam import IPAM, AllocationBlock
from pycalico.ipam.allocator import CLAIM_PROBE, CLAIM_PROBE_ROUNDS, IpamConfig
from pycalico.model import IPPool, keys
from tests.support.etcd import EtcdCluster, stored_value
from tests.support.poll import wait_until

log = logging.getLogger(__name__)

BLOCKS = 50_000
PAGE = 500
PER_BLOCK = 3  # allocations per block, with pod attributes: ~1 KB of JSON, as Calico writes
TXN_OPS = 128  # etcd's default --max-txn-ops
PREFIX = keys.block_prefix(4)


def _template() -> str:
    block = AllocationBlock.new("10.64.0.0/26", "host:@NODE@", "2026-01-01T00:00:00Z")
    block.sequence_number = 1767225600000000000
    for slot in range(PER_BLOCK):
        block.assign(1, f"k8s-pod-network.@I@{slot}",
                     {"namespace": "default", "node": "@NODE@", "pod": f"web-@I@-{slot}",
                      "timestamp": "2026-01-01 00:00:00.000000000 +0000 UTC"})
    return json.dumps(block.to_json()).replace("10.64.0.0/26", "@CIDR@")


TEMPLATE = _template()


def _block(index: int) -> tuple[str, str]:
    """A /26 block's key and JSON as Calico writes it (filled from one template: fast)."""
    cidr = f"10.{64 + (index >> 10)}.{(index >> 2) & 255}.{(index & 3) * 64}/26"  # the index-th /26 of 10.64/10
    value = TEMPLATE.replace("@CIDR@", cidr).replace("@NODE@", f"node-{index % 1000}").replace("@I@", f"{index:06d}")
    return keys.block_key(cidr), value


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[EtcdCluster, int]]:
    """Its own etcd (50,000 keys stay out of the shared one), its data in memory (the
    test measures reads, not the disk), filled with big transactions."""
    cluster = EtcdCluster(1, prefix="pctpage")
    memory = Path(tempfile.mkdtemp(prefix="pctpage-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    cluster.members[0].data_dir = memory / "m0"
    with cluster, contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, memory, True)
        started = time.monotonic()

        def write(first: int) -> int:
            client = cluster.client(timeout=30)
            ops = [{"request_put": {"key": _b64(k), "value": _b64(v)}}
                   for k, v in map(_block, range(first, min(first + TXN_OPS, BLOCKS)))]
            revision = int(client.txn([], ops)["header"]["revision"])
            client.close()
            return revision

        with ThreadPoolExecutor(4) as pool:
            revision = max(pool.map(write, range(0, BLOCKS, TXN_OPS)))
        log.info("wrote %d blocks in %.1f s", BLOCKS, time.monotonic() - started)
        yield cluster, revision


def test_list_is_paged_at_one_revision_and_holds_a_page_at_a_time(big: tuple[EtcdCluster, int]) -> None:
    """One read of the prefix while another client changes it after the first page."""
    cluster, revision = big
    client = cluster.client(timeout=30, page_size=PAGE)
    writer = cluster.client()
    last_key, last_value = _block(BLOCKS - 1)
    changed_key, changed_value = _block(BLOCKS // 2)
    new_key = keys.block_key("10.127.255.192/26")  # sorts after every existing block
    seen: dict[str, KeyValue] = {}
    started = time.monotonic()
    tracemalloc.start()
    try:
        pages = client.pages(PREFIX)
        for n, page in enumerate(pages):
            if n == 0:  # change the store under the rest of the read
                writer.put(changed_key, "{}")
                writer.delete(last_key)
                writer.put(new_key, "{}")
            if n == 10:  # ten pages in: a whole-prefix body would have been held by now
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            assert len(page) <= PAGE
            seen.update((kv.key, kv) for kv in page)
        elapsed = time.monotonic() - started
        whole = BLOCKS * len(_block(0)[1])
        log.info("list of %d keys: %d requests in %.1f s; peak %.1f MB over 10 pages (values: %.1f MB in all)",
                 len(seen), client.requests, elapsed, peak / 1e6, whole / 1e6)
        assert pages.revision >= revision
        assert len(seen) == BLOCKS and pages.count == BLOCKS
        assert client.requests_by_path == {"/v3/kv/range": math.ceil(BLOCKS / PAGE)} == {"/v3/kv/range": pages.requests}
        assert new_key not in seen and last_key in seen and seen[changed_key].value == changed_value  # not torn
        assert stored_value(writer, changed_key) == "{}" and writer.get(last_key) is None  # the changes did happen
        assert peak < whole / 4
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        writer.put(changed_key, changed_value)
        writer.put(last_key, last_value)
        writer.delete(new_key)
        writer.close()
        client.close()
    kvs, at = cluster.client(page_size=PAGE).list(PREFIX, revision=pages.revision)  # list() = the same pages
    assert [kv.key for kv in kvs] == sorted(seen) and at == pages.revision


def _page_bytes(page: list[KeyValue]) -> int:
    """A page's keys and values as the gateway sends them (base64)."""
    return sum(len(_b64(kv.key)) + len(_b64(kv.value)) for kv in page)


def test_pages_without_a_page_size_hold_about_page_bytes(big: tuple[EtcdCluster, int]) -> None:
    """A client not told a page size starts small, then sizes pages by bytes: 50,000 small
    blocks in far fewer requests than at 500 keys a page, and 300 fat values (20 KB: what a
    full /26 block with pod attributes weighs) still in pages of about PAGE_BYTES."""
    cluster, _ = big
    FAT = 300
    fat_prefix = f"/calico/pctpage-fat-{uuid.uuid4().hex[:6]}/"
    writer = cluster.client()
    client = cluster.client(timeout=30)
    try:
        for i in range(FAT):
            writer.put(f"{fat_prefix}{i:03d}", f"{i:03d}" + "x" * 20_000)
        for prefix, count in ((PREFIX, BLOCKS), (fat_prefix, FAT)):
            pages = client.pages(prefix)
            sizes, biggest = [], 0
            for page in pages:
                sizes.append(len(page))
                biggest = max(biggest, _page_bytes(page))
            log.info("%s: %d keys in %d pages %s, the biggest %.2f MB", prefix, count, len(sizes), sizes[:4],
                     biggest / 1e6)
            assert sum(sizes) == count == pages.count and pages.requests == len(sizes)
            assert sizes[0] == FIRST_PAGE_SIZE
            assert biggest <= PAGE_BYTES * 1.1  # sized from the average before it: near, never far over
        assert pages.requests >= FAT * 26_000 // PAGE_BYTES + 1  # fat values: pages shrank to fit
        assert client.requests_by_path["/v3/kv/range"] - pages.requests <= math.ceil(BLOCKS / PAGE) / 2
    finally:
        writer.delete_prefix(fat_prefix)
        writer.close()
        client.close()


def test_a_watchers_resync_applies_50000_keys_in_pages_then_watches(big: tuple[EtcdCluster, int]) -> None:
    cluster, _ = big
    client = cluster.client(timeout=30, page_size=PAGE)
    chunks: list[int] = []
    snapshot: dict[str, str] = {}
    events: list[WatchEvent] = []
    lock = threading.Lock()

    def on_pages(revision: int, pages: Iterator[list[KeyValue]]) -> None:
        for page in pages:
            chunks.append(len(page))
            snapshot.update((kv.key, kv.value) for kv in page)

    def on_events(batch: list[WatchEvent]) -> None:
        with lock:
            events.extend(batch)

    watcher = PrefixWatcher(client, PREFIX, None, on_events, on_sync_pages=on_pages, name="paging-test").start()
    try:
        assert watcher.synced.wait(60)
        ranges = client.requests_by_path.get("/v3/kv/range", 0)
        log.info("watcher resync: %d keys in %d pages, %d range requests", len(snapshot), len(chunks), ranges)
        assert len(snapshot) == BLOCKS and len(chunks) == ranges == math.ceil(BLOCKS / PAGE) > 1
        key, value = _block(7)
        cluster.client().put(key, value)  # seen by the watch that starts at the pinned revision
        assert wait_until(lambda: any(e.kv.key == key for e in list(events)), 10)
    finally:
        watcher.stop()
        client.close()


def test_ipam_check_reads_50000_blocks(big: tuple[EtcdCluster, int]) -> None:
    cluster, _ = big
    client = cluster.client(timeout=30, page_size=PAGE)
    started = time.monotonic()
    report = IPAM(client).check()
    log.info("ipam check of %d blocks: %d requests in %.1f s", BLOCKS, client.requests, time.monotonic() - started)
    assert report.block_problems == []
    assert report.allocations == BLOCKS * PER_BLOCK
    assert len(report.leaked) == BLOCKS * PER_BLOCK  # no endpoints own these made-up pods
    assert len(report.handles_missing) == BLOCKS * PER_BLOCK  # and no handle keys were written
    assert client.requests_by_path["/v3/kv/range"] > math.ceil(BLOCKS / PAGE)
    client.close()


def test_block_cidrs_reads_keys_only_in_pages(big: tuple[EtcdCluster, int]) -> None:
    """A block claim asks only which blocks exist: 50,000 keys without their values,
    in pages, a small fraction of the bytes of the values."""
    cluster, _ = big
    client = cluster.client(timeout=30, page_size=PAGE)
    try:
        raw = client.call("/v3/kv/range", {"key": _b64(PREFIX), "range_end": _b64(PREFIX[:-1] + "0"),
                                           "limit": "3", "keys_only": True})
        assert [kv.get("value") for kv in raw["kvs"]] == [None] * 3  # etcd kept the values
        client.requests_by_path.clear()
        cidrs = IPAM(client).block_cidrs()
        assert len(cidrs) == BLOCKS
        assert {_block(0)[0], _block(BLOCKS - 1)[0]} <= {keys.block_key(c) for c in cidrs}
        assert client.requests_by_path == {"/v3/kv/range": math.ceil(BLOCKS / PAGE)}
    finally:
        client.close()


def test_block_claim_probes_candidates_before_it_reads_every_key(big: tuple[EtcdCluster, int]) -> None:
    """A claim walking free space finds a block with one keys-only transaction of CLAIM_PROBE
    candidates, and reads no block key list; one starting deep among the 50,000 taken blocks gives
    up probing after CLAIM_PROBE_ROUNDS windows, reads every key once and still claims a free one."""
    cluster, _ = big
    client = cluster.client(timeout=30, page_size=PAGE)
    pool = IPPool("big", {"cidr": "10.64.0.0/10", "blockSize": 26})
    ipam = IPAM(client)
    base = int(pool.network.network_address)

    def start(host: str) -> int:
        return (int(next(ipam._subnet_walk(pool, host)).network_address) - base) // 64

    hosts = [f"pctclaim-{i}" for i in range(2000)]
    sparse = next(h for h in hosts if BLOCKS + CLAIM_PROBE <= start(h) < (1 << 16) - CLAIM_PROBE)
    dense = next(h for h in hosts if start(h) < BLOCKS - 2 * CLAIM_PROBE * CLAIM_PROBE_ROUNDS)
    claimed: list[tuple[str, str]] = []
    try:
        for host, full_read in ((sparse, False), (dense, True)):
            client.requests_by_path.clear()
            cidr = ipam._claim_block(host, [pool], IpamConfig(), 0)
            assert cidr is not None
            claimed.append((host, cidr))
            index = (int(ipaddress.ip_network(cidr).network_address) - base) // 64
            assert index >= BLOCKS  # a free one: every block below BLOCKS is taken
            ranges = client.requests_by_path.get("/v3/kv/range", 0)
            if full_read:
                # every key once: the 50,000 and the sparse claim's block
                assert ranges == math.ceil((BLOCKS + 1) / PAGE), client.requests_by_path
            else:
                assert ranges == 0 and index == start(host), client.requests_by_path  # the first candidate
            stored = client.get(keys.block_key(cidr))
            assert stored is not None and stored.json()["affinity"] == f"host:{host}"
    finally:
        for host, cidr in claimed:
            client.delete(keys.block_key(cidr))
            client.delete(keys.affinity_key(host, cidr))
        client.close()
