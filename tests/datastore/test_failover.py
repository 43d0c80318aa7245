"""A 3-member etcd loses a member mid-run: no operation may fail."""

from __future__ import annotations

import threading

from pycalico.datastore.etcd import EtcdClient
from pycalico.errors import PycalicoError
from pycalico.ipam import IPAM
from pycalico.model import IPPool, ResourceStore
from tests.support.etcd import EtcdCluster
from tests.support.poll import wait_until


def _leader_index(cluster: EtcdCluster) -> int:
    """The member that leads; killing it forces an election mid-run, the hardest case."""
    for i, m in enumerate(cluster.members):
        resp = EtcdClient([m.client_url], cluster.tls()).call("/v3/maintenance/status", {})
        if resp.get("leader") == resp.get("header", {}).get("member_id"):
            return i
    return 0


def test_killing_a_member_mid_run_fails_no_operation() -> None:
    with EtcdCluster(3, prefix="pctfo") as cluster:
        client = cluster.client(timeout=10)
        ResourceStore(client).create(IPPool("pool1", {"cidr": "10.251.0.0/16", "blockSize": 28}))
        ipam = IPAM(client)
        done: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def work() -> None:
            i = 0
            while not stop.is_set() and i < 400:
                try:
                    [ip] = ipam.auto_assign(f"fo.{i}", {}, "n1")
                    if i % 3 == 0:
                        ipam.release_by_handle(f"fo.{i}")
                    done.append(str(ip.ip))
                except PycalicoError as exc:
                    failures.append(f"{i}: {exc}")
                i += 1

        worker = threading.Thread(target=work)
        worker.start()
        try:
            assert wait_until(lambda: len(done) >= 30, 30)
            victim = _leader_index(cluster)
            cluster.kill(victim)
            before = len(done)
            # Progress after the kill; the deadline is generous for loaded machines, the
            # point is that no operation fails.
            assert wait_until(lambda: len(done) >= before + 30 or not worker.is_alive(), 180)
        finally:
            stop.set()
            worker.join(60)
        assert failures == []
        assert len(done) >= before + 30 or len(done) == 400
        assert IPAM(cluster.client()).check().block_problems == []
