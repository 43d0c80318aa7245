"""The syncer against a real etcd: one stream per prefix for every subscriber, a
late subscriber's own snapshot, resume after a drop, re-list after compaction."""

from __future__ import annotations

import json
import os
import subprocess
import threading

from pycalico.datastore.etcd import EtcdClient, KeyValue, WatchEvent
from pycalico.datastore.syncer import PrefixStream, Syncer, TypedCache
from tests.support.etcd import EtcdCluster
from tests.support.poll import wait_until

PREFIX = "/calico/sync/"


class Recorder:
    """A subscriber that rebuilds the prefix from what it was told."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.snapshots = 0
        self.events = 0
        self._fresh: dict[str, str] = {}

    def on_sync_begin(self, prefix: str, revision: int) -> None:
        self._fresh = {}

    def on_sync_page(self, prefix: str, kvs: list[KeyValue]) -> None:
        self._fresh.update({kv.key: kv.value for kv in kvs})

    def on_sync_end(self, prefix: str, revision: int) -> None:
        self.state = self._fresh
        self.snapshots += 1

    def on_events(self, prefix: str, events: list[WatchEvent]) -> None:
        for e in events:
            self.events += 1
            if e.kind == "delete":
                self.state.pop(e.kv.key, None)
            else:
                self.state[e.kv.key] = e.kv.value


def truth(etcd: EtcdClient) -> dict[str, str]:
    return {kv.key: kv.value for kv in etcd.list(PREFIX)[0]}


def _drop_live_stream(stream: PrefixStream) -> None:
    """Close the open watch from under the stream, as a dropped connection would."""
    assert wait_until(lambda: stream._stream is not None and stream._stream._resp is not None, 10)
    live = stream._stream
    assert live is not None
    live.close()
    live._closed = False  # the syncer, not the stream, decides to stop


def test_subscribers_of_one_prefix_share_one_stream(etcd_cluster, etcd: EtcdClient) -> None:
    client = etcd_cluster.client()
    syncer = Syncer(client, retry_interval=0.05)
    first, second = Recorder(), Recorder()
    etcd.put(PREFIX + "pre", "0")
    try:
        subs = [syncer.subscribe(PREFIX, first), syncer.subscribe(PREFIX, second)]
        assert wait_until(lambda: all(s.synced.is_set() for s in subs), 10)
        for i in range(20):
            etcd.put(PREFIX + f"k{i}", str(i))
        etcd.delete(PREFIX + "k3")
        assert wait_until(lambda: first.state == second.state == truth(etcd), 10), (first.state, second.state)
        assert client.watches_opened == {PREFIX: 1}
    finally:
        syncer.stop()
        client.close()


def test_a_late_subscriber_gets_its_own_snapshot_and_every_later_event_on_the_same_stream(
        etcd_cluster, etcd: EtcdClient) -> None:
    client = etcd_cluster.client()
    syncer = Syncer(client, retry_interval=0.05)
    early, late = Recorder(), Recorder()
    stop = threading.Event()

    def writer() -> None:  # writes while the late subscriber joins
        i = 0
        while not stop.is_set():
            etcd.put(PREFIX + f"w{i % 50}", str(i))
            if i % 7 == 0:
                etcd.delete(PREFIX + f"w{(i * 3) % 50}")
            i += 1

    try:
        assert syncer.subscribe(PREFIX, early).synced.wait(10)
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            joined = syncer.subscribe(PREFIX, late)
            assert joined.synced.wait(10)
            assert wait_until(lambda: late.events > 20, 10)
        finally:
            stop.set()
            thread.join()
        expected = truth(etcd)
        assert wait_until(lambda: early.state == expected and late.state == expected, 10), \
            (len(early.state), len(late.state), len(expected))
        assert late.snapshots == 1 and early.snapshots == 1
        assert syncer.streams[PREFIX].joins == 1
        assert client.watches_opened == {PREFIX: 1}, "the late subscriber must not open a second watch"
    finally:
        syncer.stop()
        client.close()


def test_a_dropped_stream_resumes_without_losing_events(etcd: EtcdClient) -> None:
    syncer = Syncer(etcd, retry_interval=0.05)
    rec = Recorder()
    try:
        assert syncer.subscribe(PREFIX, rec).synced.wait(10)
        stream = syncer.streams[PREFIX]
        for i in range(30):
            etcd.put(PREFIX + f"k{i}", str(i))
            if i % 10 == 5:
                _drop_live_stream(stream)
        etcd.delete(PREFIX + "k0")
        assert wait_until(lambda: rec.state == truth(etcd), 10)
        assert rec.snapshots == 1 and rec.events == 31
        assert stream.reconnects >= 1 and stream.resyncs == 1
    finally:
        syncer.stop()


def test_a_stream_behind_a_compaction_relists_for_every_subscriber(etcd: EtcdClient) -> None:
    syncer = Syncer(etcd, retry_interval=300.0)  # it waits after the drop until kicked
    one, two = Recorder(), Recorder()
    etcd.put(PREFIX + "a", "1")
    etcd.put(PREFIX + "gone", "x")
    try:
        subs = [syncer.subscribe(PREFIX, one), syncer.subscribe(PREFIX, two)]
        assert wait_until(lambda: all(s.synced.is_set() for s in subs), 10)
        stream = syncer.streams[PREFIX]
        _drop_live_stream(stream)
        etcd.put(PREFIX + "a", "2")
        etcd.delete(PREFIX + "gone")
        etcd.put(PREFIX + "b", "3")
        etcd.compact(etcd.revision())
        assert wait_until(lambda: stream._stream is None, 10)
        stream.kick()
        assert wait_until(lambda: one.snapshots == two.snapshots == 2, 10)
        assert one.state == two.state == {PREFIX + "a": "2", PREFIX + "b": "3"}
        assert stream.resyncs == 2
    finally:
        syncer.stop()


def test_typed_cache_parses_skips_bad_values_and_drops_keys_a_snapshot_lacks(etcd: EtcdClient) -> None:
    def parse(kv: KeyValue) -> int | None:
        value = json.loads(kv.value)
        return None if value.get("absent") else int(value["n"])

    changes: list[int] = []
    cache: TypedCache[int] = TypedCache(parse, on_change=lambda: changes.append(1))
    cache.items[PREFIX + "stale"] = 99  # not in etcd: the snapshot removes it
    etcd.put(PREFIX + "one", json.dumps({"n": 1}))
    etcd.put(PREFIX + "bad", "not json")
    etcd.put(PREFIX + "off", json.dumps({"absent": True}))
    syncer = Syncer(etcd, retry_interval=0.05)
    try:
        assert syncer.subscribe(PREFIX, cache).synced.wait(10)
        assert cache.items == {PREFIX + "one": 1}
        rev = etcd.put(PREFIX + "two", json.dumps({"n": 2}))
        etcd.put(PREFIX + "one", json.dumps({"absent": True}))
        assert wait_until(lambda: cache.items == {PREFIX + "two": 2}, 10), cache.items
        assert cache.revision > rev and len(changes) >= 2
    finally:
        syncer.stop()


def test_a_failing_subscriber_does_not_starve_the_others(etcd: EtcdClient) -> None:
    class Broken(Recorder):
        def on_events(self, prefix: str, events: list[WatchEvent]) -> None:
            raise RuntimeError("bug")

    syncer = Syncer(etcd, retry_interval=0.05)
    good = Recorder()
    try:
        subs = [syncer.subscribe(PREFIX, Broken()), syncer.subscribe(PREFIX, good)]
        assert wait_until(lambda: all(s.synced.is_set() for s in subs), 10)
        etcd.put(PREFIX + "k", "v")
        assert wait_until(lambda: good.state == {PREFIX + "k": "v"}, 10)
    finally:
        syncer.stop()


def test_unsubscribing_the_last_subscriber_stops_the_stream(etcd: EtcdClient) -> None:
    syncer = Syncer(etcd, retry_interval=0.05)
    sub = syncer.subscribe(PREFIX, Recorder())
    assert sub.synced.wait(10)
    stream = syncer.streams[PREFIX]
    syncer.unsubscribe([sub])
    assert PREFIX not in syncer.streams
    assert wait_until(lambda: not stream._thread.is_alive(), 5)


def test_a_watch_on_a_connection_gone_half_open_ends_and_resumes() -> None:
    """Real iptables drops what etcd sends back on one stream's port: no FIN or RST arrives,
    so only TCP keepalive can end the stream's blocking read."""
    with EtcdCluster(prefix="pcka") as cluster:
        port = cluster.members[0].client_port
        client = cluster.client(watch_keepalive=(1, 1, 2))
        syncer = Syncer(client, retry_interval=0.2)
        rec = Recorder()
        rule = ["INPUT", "-i", "lo", "-p", "tcp", "--sport", str(port),
                "-m", "comment", "--comment", f"pcka-{os.getpid()}", "-j", "DROP"]
        try:
            client.put(PREFIX + "before", "1")
            assert syncer.subscribe(PREFIX, rec).synced.wait(10)
            stream = syncer.streams[PREFIX]
            assert wait_until(lambda: client.watches_opened.get(PREFIX) == 1, 10)
            subprocess.run(["iptables", "-w", "-I", *rule], check=True)
            try:
                assert wait_until(lambda: stream.reconnects >= 1, 20), \
                    "the watch still waits on a connection that answers nothing"
            finally:
                subprocess.run(["iptables", "-w", "-D", *rule], check=True)
            client.put(PREFIX + "after", "2")
            assert wait_until(lambda: rec.state == truth(client), 15), rec.state
            assert rec.snapshots == 1, "a resumed watch must not re-list"
        finally:
            syncer.stop()
            client.close()
