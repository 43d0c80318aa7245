"""A running agent with the CNI fast path on watches each prefix once (issue 11 item 3).

Counted twice, independently: by the agent's client (``pycalico_agent_watch_streams_opened``,
incremented when etcd accepts a watch) and by etcd itself (its watcher gauge, on an etcd
of this test's own, so no other watcher is counted).
"""

from __future__ import annotations

import re
import ssl
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from pycalico.agent.main import SOURCES
from pycalico.cni.cache import MIRRORED
from tests.support.cluster import running_cluster
from tests.support.etcd import EtcdCluster
from tests.support.topology import Host, in_netns, poll

pytestmark = pytest.mark.netns

VXLAN = {"CALICO_NETWORKING_BACKEND": "vxlan"}


@pytest.fixture
def own_etcd(unique: str) -> Iterator[EtcdCluster]:
    with EtcdCluster(1, prefix=f"{unique}w") as cluster:
        yield cluster


def agent_metrics(host: Host) -> str:
    with in_netns(host.ns):
        with urllib.request.urlopen("http://127.0.0.1:9091/metrics", timeout=5) as resp:
            return resp.read().decode()


def etcd_watchers(cluster: EtcdCluster) -> int:
    pki = cluster.pki
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    with urllib.request.urlopen(f"{cluster.endpoints[0]}/metrics", timeout=5, context=ctx) as resp:
        text = resp.read().decode()
    found = re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.M)
    assert found, "etcd exports no watcher gauge"
    return int(float(found.group(1)))


def by_prefix(metrics: str, name: str) -> dict[str, int]:
    return {m.group(1): int(float(m.group(2)))
            for m in re.finditer(rf'^{name}\{{prefix="([^"]*)"\}} (\S+)$', metrics, re.M)}


def poll_by_prefix(host: Host, name: str, done: Callable[[dict[str, int]], bool], what: str) -> dict[str, int]:
    """The agent's metric ``name`` by prefix, read until ``done`` holds; the last reading on a timeout."""
    last: dict[str, int] = {}

    def check() -> bool:
        last.clear()
        last.update(by_prefix(agent_metrics(host), name))
        return done(last)

    try:
        poll(check, 20, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {name} {last}") from None
    return last


def test_agent_with_cni_server_opens_one_watch_per_prefix(own_etcd: EtcdCluster, unique: str) -> None:
    client = own_etcd.client()
    try:
        with running_cluster(own_etcd, client, unique, [1], env=VXLAN) as cl:
            cl.create_pool("10.251.0.0/16", vxlan="Always")
            assert etcd_watchers(own_etcd) == 0
            cl.start(bird=False)
            (host,) = cl.hosts
            poll((host.run_dir / "cni.sock").exists, 20, what="the agent's CNI socket")
            cl.add_pod_cni(host, "p")  # through the socket: the fast path's mirror is running now
            served = re.search(r'^pycalico_agent_cni_requests_total\{result="ok",verb="ADD"\} (\S+)$',
                               agent_metrics(host), re.M)
            assert served and float(served.group(1)) == 1, "the ADD did not go through the agent's socket"
            wanted = set(p for p, _ in SOURCES.values()) | set(MIRRORED)
            shared = {p for p, _ in SOURCES.values()} & set(MIRRORED)
            assert shared, "the agent and the CNI cache no longer share a prefix: this test proves nothing"

            poll_by_prefix(host, "pycalico_agent_watch_subscribers",
                           lambda seen: set(seen) == wanted and all(seen[p] == 2 for p in shared),
                           f"the agent and the CNI cache subscribed to every prefix of {sorted(wanted)}")
            # a subscriber is counted when it subscribes, a stream when etcd accepts its watch: wait for both
            opened = poll_by_prefix(host, "pycalico_agent_watch_streams_opened_total",
                                    lambda opened: set(opened) == wanted,
                                    "a watch stream accepted by etcd for every prefix")
            assert opened == {p: 1 for p in wanted}, opened
            assert etcd_watchers(own_etcd) == len(wanted), "etcd holds more watches than the agent opened"
    finally:
        client.close()
