"""The etcd client against a real etcd with mutual TLS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pycalico.datastore.etcd import EtcdClient, TlsConfig, retry_on_conflict
from pycalico.datastore.lease import LeaseKeeper
from pycalico.datastore.watch import PrefixWatcher
from pycalico.errors import Compacted, DatastoreError, DatastoreUnavailable, KeyExists, KeyNotFound, RevisionConflict
from tests.support.etcd import EtcdCluster, free_port
from tests.support.poll import wait_until

REPO = Path(__file__).resolve().parents[2]


def test_put_get_list_delete(etcd: EtcdClient) -> None:
    etcd.put("/calico/t/a", "1")
    etcd.put("/calico/t/b", "2")
    etcd.put("/calico/u/c", "3")
    assert etcd.get("/calico/t/a").value == "1"  # type: ignore[union-attr]
    kvs, revision = etcd.list("/calico/t/")
    assert [kv.key for kv in kvs] == ["/calico/t/a", "/calico/t/b"]
    assert revision >= max(kv.mod_revision for kv in kvs)
    assert etcd.delete("/calico/t/a") is True
    assert etcd.delete("/calico/t/a") is False
    assert etcd.get("/calico/t/a") is None


def test_create_if_absent_and_cas(etcd: EtcdClient) -> None:
    etcd.create("/calico/t/k", "v1")
    with pytest.raises(KeyExists) as exists:
        etcd.create("/calico/t/k", "v2")
    assert exists.value.existing.value == "v1"
    kv = etcd.get("/calico/t/k")
    assert kv is not None
    etcd.update("/calico/t/k", "v2", kv.mod_revision)
    with pytest.raises(RevisionConflict):
        etcd.update("/calico/t/k", "v3", kv.mod_revision)
    with pytest.raises(KeyNotFound):
        etcd.update("/calico/t/missing", "v", 1)
    with pytest.raises(RevisionConflict):
        etcd.delete("/calico/t/k", mod_revision=kv.mod_revision)
    assert etcd.get("/calico/t/k").value == "v2"  # type: ignore[union-attr]


def test_cas_conflict_is_retried_and_wins_exactly_once(etcd: EtcdClient) -> None:
    """Two writers increment one counter by read-modify-CAS; a third party moves the
    key under the first writer once. Every increment lands exactly once."""
    etcd.put("/calico/t/counter", "0")
    attempts = {"n": 0}

    def increment() -> int:
        kv = etcd.get("/calico/t/counter")
        assert kv is not None
        attempts["n"] += 1
        if attempts["n"] == 1:
            etcd.put("/calico/t/counter", str(int(kv.value) + 100))  # someone else wins first
        return etcd.update("/calico/t/counter", str(int(kv.value) + 1), kv.mod_revision)

    retry_on_conflict(increment)
    assert attempts["n"] == 2
    assert etcd.get("/calico/t/counter").value == "101"  # type: ignore[union-attr]

    def add_one() -> None:
        for _ in range(25):
            def step() -> int:
                kv = etcd.get("/calico/t/counter")
                assert kv is not None
                return etcd.update("/calico/t/counter", str(int(kv.value) + 1), kv.mod_revision)
            retry_on_conflict(step)

    threads = [threading.Thread(target=add_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert etcd.get("/calico/t/counter").value == str(101 + 100)  # type: ignore[union-attr]


def _drop_live_stream(watcher: PrefixWatcher) -> None:
    """Close the watcher's open stream from under it, as a dropped connection would."""
    assert wait_until(lambda: watcher._stream is not None and watcher._stream._resp is not None, 10)
    stream = watcher._stream
    assert stream is not None
    stream.close()
    stream._closed = False  # the watcher, not the stream, decides to stop


def test_watch_delivers_every_event_across_dropped_streams(etcd: EtcdClient) -> None:
    seen: list[str] = []
    snapshots: list[int] = []
    watcher = PrefixWatcher(etcd, "/calico/w/", lambda kvs, rev: snapshots.append(len(kvs)),
                            lambda events: seen.extend(f"{e.kind}:{e.kv.key}" for e in events),
                            retry_interval=0.05)
    etcd.put("/calico/w/pre", "x")
    watcher.start()
    try:
        assert watcher.synced.wait(10)
        expected = []
        for i in range(30):
            etcd.put(f"/calico/w/k{i}", str(i))
            expected.append(f"put:/calico/w/k{i}")
            if i % 10 == 5:
                _drop_live_stream(watcher)
        etcd.delete("/calico/w/k0")
        expected.append("delete:/calico/w/k0")
        assert wait_until(lambda: len(seen) >= len(expected), 10), seen
        assert seen == expected
        assert snapshots == [1]
        assert watcher.reconnects >= 1
    finally:
        watcher.stop()


def test_watch_from_a_compacted_revision_raises_and_watcher_relists(etcd: EtcdClient) -> None:
    etcd.put("/calico/c/a", "1")
    start = etcd.put("/calico/c/a", "2")
    etcd.put("/calico/c/b", "3")
    etcd.compact(etcd.revision())
    with pytest.raises(Compacted):
        for _ in etcd.watch_stream("/calico/c/", start - 1):
            pass


def test_watcher_relists_when_it_resumes_below_a_compaction(etcd: EtcdClient) -> None:
    """Pause the watcher (drop its stream; its retry wait is long), write and compact,
    then let it resume: it must re-list instead of losing what it missed."""
    snapshots: list[dict[str, str]] = []
    watcher = PrefixWatcher(etcd, "/calico/r/", lambda kvs, rev: snapshots.append({kv.key: kv.value for kv in kvs}),
                            lambda events: None, retry_interval=300.0)
    etcd.put("/calico/r/a", "1")
    watcher.start()
    try:
        assert watcher.synced.wait(10)
        _drop_live_stream(watcher)
        etcd.put("/calico/r/a", "2")
        etcd.put("/calico/r/b", "3")
        etcd.compact(etcd.revision())
        assert wait_until(lambda: watcher._stream is None, 10)  # it noticed the drop and waits
        watcher.kick()
        assert wait_until(lambda: len(snapshots) >= 2, 10)
        assert snapshots[-1] == {"/calico/r/a": "2", "/calico/r/b": "3"}
        assert watcher.resyncs == 2
    finally:
        watcher.stop()


def test_lease_keepalive_keeps_key_and_expiry_regrants(etcd: EtcdClient) -> None:
    granted: list[int] = []

    def on_new(lease: int) -> None:
        granted.append(lease)
        etcd.put("/calico/l/status", "up", lease=lease)

    keeper = LeaseKeeper(etcd, ttl=2, on_new_lease=on_new).start()
    try:
        first = keeper.lease_id
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # outlive the TTL twice over
            assert etcd.get("/calico/l/status") is not None
            time.sleep(0.2)
        etcd.lease_revoke(first)  # the lease is lost, as after a long etcd outage
        assert wait_until(lambda: len(granted) >= 2 and etcd.get("/calico/l/status") is not None, 10)
        assert keeper.lease_id != first
    finally:
        keeper.stop()
    assert wait_until(lambda: etcd.get("/calico/l/status") is None, 5)


def test_unreachable_etcd_gives_one_error_naming_the_endpoints(etcd_cluster: EtcdCluster) -> None:
    ports = [free_port(), free_port()]
    endpoints = [f"https://127.0.0.1:{p}" for p in ports]
    client = EtcdClient(endpoints, etcd_cluster.tls(), timeout=2, connect_timeout=1)
    with pytest.raises(DatastoreUnavailable) as err:
        client.get("/calico/x")
    text = str(err.value)
    assert all(e in text for e in endpoints) and "connection refused" in text
    assert "Traceback" not in text


def test_wrong_client_certificate_is_a_clear_error(etcd_cluster: EtcdCluster) -> None:
    pki = etcd_cluster.pki
    client = EtcdClient(etcd_cluster.endpoints, TlsConfig(str(pki.ca), str(pki.rogue_cert), str(pki.rogue_key)))
    with pytest.raises(DatastoreUnavailable) as err:
        client.get("/calico/x")
    assert etcd_cluster.endpoints[0] in str(err.value) and "TLS" in str(err.value)
    wrong_ca = EtcdClient(etcd_cluster.endpoints, TlsConfig(str(pki.rogue_ca), str(pki.client_cert),
                                                            str(pki.client_key)))
    with pytest.raises(DatastoreUnavailable) as err:
        wrong_ca.get("/calico/x")
    assert "not trusted by the configured CA" in str(err.value)


def test_missing_tls_file_names_the_paths_not_the_contents(tmp_path: Path, etcd_cluster: EtcdCluster) -> None:
    with pytest.raises(DatastoreError) as err:
        EtcdClient(etcd_cluster.endpoints, TlsConfig(str(tmp_path / "nope.pem"), str(etcd_cluster.pki.client_cert),
                                                     str(etcd_cluster.pki.client_key)))
    assert "nope.pem" in str(err.value) and "PRIVATE KEY" not in str(err.value)


def test_environment_ca_bundles_do_not_replace_the_cluster_ca(etcd_cluster: EtcdCluster) -> None:
    """Users export REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE/SSL_CERT_FILE; the client must ignore them."""
    src = str(REPO / "src")
    code = (
        f"import sys, json; sys.path.insert(0, {src!r});"
        "from pycalico.datastore.etcd import EtcdClient, TlsConfig;"
        "c = EtcdClient(json.loads(sys.argv[1]), TlsConfig(*sys.argv[2:5]));"
        "c.put('/calico/env', 'ok'); print(c.get('/calico/env').value)"
    )
    pki = etcd_cluster.pki
    env = dict(os.environ, REQUESTS_CA_BUNDLE=str(pki.rogue_ca), CURL_CA_BUNDLE=str(pki.rogue_ca),
               SSL_CERT_FILE=str(pki.rogue_ca), SSL_CERT_DIR="/nonexistent")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(etcd_cluster.endpoints), str(pki.ca),
                          str(pki.client_cert), str(pki.client_key)], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"



def test_a_restarted_etcd_is_reached_again_on_the_next_call() -> None:
    """Kept-alive TLS connections die with the server; the next call must reconnect."""
    with EtcdCluster(1, prefix="pctre") as cluster:
        client = cluster.client()
        client.put("/calico/r", "1")
        cluster.stop_member(0)
        cluster.start_member(cluster.members[0])
        cluster.wait_healthy()
        assert client.get("/calico/r").value == "1"  # type: ignore[union-attr]
        client.put("/calico/r", "2")
