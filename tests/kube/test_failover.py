"""Two pycalico-kube-controllers processes: one active (it holds the etcd lease), one standby;
kill -9 the active one and the standby takes over within 15 s and does the work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycalico.datastore.etcd import EtcdClient
from pycalico.kube.election import LEADER_KEY, LeaderElection
from pycalico.model import Profile, ResourceStore
from tests.support.etcd import EtcdCluster, free_port
from tests.support.kube_apiserver import KubeApiServer
from tests.support.poll import wait_until


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


@pytest.fixture
def controllers(etcd_cluster: EtcdCluster, etcd: EtcdClient, kubeconfig: Path,
                unique: str) -> Iterator[list[tuple[str, subprocess.Popen[bytes], int]]]:
    procs: list[tuple[str, subprocess.Popen[bytes], int]] = []
    tls = etcd_cluster.tls()
    for i in range(2):
        port = free_port()
        env = {**os.environ, "ETCD_ENDPOINTS": ",".join(etcd_cluster.endpoints), "ETCD_CA_CERT_FILE": tls.ca_file,
               "ETCD_CERT_FILE": tls.cert_file, "ETCD_KEY_FILE": tls.key_file, "KUBECONFIG": str(kubeconfig),
               "METRICS_HOST": "127.0.0.1", "METRICS_PORT": str(port), "LEADER_ELECTION_ID": f"{unique}-{i}",
               "LEADER_ELECTION_TTL": "5", "ENABLED_CONTROLLERS": "namespace,policy"}
        log = open(kubeconfig.parent / f"controllers-{i}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "pycalico.kube.main"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        procs.append((f"{unique}-{i}", proc, port))
    try:
        yield procs
    finally:
        for _, proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def leader(etcd: EtcdClient) -> str:
    kv = etcd.get(LEADER_KEY)
    return kv.value if kv else ""


def test_standby_takes_over_within_15s_when_the_active_one_is_killed(
        kube: KubeApiServer, etcd: EtcdClient, controllers: list[tuple[str, subprocess.Popen[bytes], int]]) -> None:
    store = ResourceStore(etcd)
    names = {name: (proc, port) for name, proc, port in controllers}
    assert wait_until(lambda: leader(etcd) in names, 20), "no instance became active"
    active = leader(etcd)
    standby = next(n for n in names if n != active)
    kube.create("namespaces", {"metadata": {"name": "before"}})
    assert wait_until(lambda: store.get(Profile, "kns.before") is not None, 15)
    active_port, standby_port = names[active][1], names[standby][1]
    assert wait_until(lambda: get(f"http://127.0.0.1:{standby_port}/readiness")[0] == 200, 10)
    assert "kube_controllers_is_leader 1.0" in get(f"http://127.0.0.1:{active_port}/metrics")[1]
    assert "kube_controllers_is_leader 0.0" in get(f"http://127.0.0.1:{standby_port}/metrics")[1]

    names[active][0].send_signal(signal.SIGKILL)
    names[active][0].wait(5)
    killed = time.monotonic()
    kube.create("namespaces", {"metadata": {"name": "after"}})
    assert wait_until(lambda: store.get(Profile, "kns.after") is not None, 15), "the standby never took over"
    took_over = time.monotonic() - killed
    assert leader(etcd) == standby
    print(f"failover took {took_over:.1f}s")
    assert took_over <= 15, f"failover took {took_over:.1f}s"
    assert names[standby][0].poll() is None


def test_a_leader_whose_lease_is_gone_stops_leading(etcd: EtcdClient, unique: str) -> None:
    first = LeaderElection(etcd, f"{unique}-a", ttl=3)
    second = LeaderElection(etcd, f"{unique}-b", ttl=3)
    try:
        assert first.try_acquire()
        assert not second.try_acquire()  # the key is held
        assert leader(etcd) == f"{unique}-a"
        etcd.lease_revoke(first.lease_id)  # as when the lease expired while etcd was unreachable
        assert wait_until(first.lost.is_set, 5)
        assert not first.leading.is_set()
        assert second.try_acquire() and leader(etcd) == f"{unique}-b"
    finally:
        first.resign()
        second.resign()
    assert leader(etcd) == ""  # resigning revokes the lease, and the key goes with it
