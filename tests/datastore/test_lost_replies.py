"""Writes whose reply is lost after etcd applied them: never resent blind, settled by reading.

Every test sends its client through a FaultProxy (tests/support/faultproxy.py) that
forwards the request to the real etcd and loses the reply, by closing the connection
or by holding the reply past the client's timeout. Each test checks that the fault
really happened, that the caller was told the truth once, and that the datastore holds
exactly what the caller was told: every handle owns exactly the addresses returned,
nothing else is allocated, no second lease, no false "exists".
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pycalico.agent.settings import AgentSettings
from pycalico.agent.startup import ensure_tunnel_addresses, register_node
from pycalico.datastore.etcd import EtcdClient
from pycalico.datastore.lease import LeaseKeeper
from pycalico.errors import OutcomeUnknown
from pycalico.ipam import IPAM, tunnel_handle
from pycalico.model import IPPool, Node, ResourceStore, keys
from tests.support.etcd import EtcdCluster, free_port, stored_value
from tests.support.faultproxy import FaultProxy, LosingClient

CLIENT_TIMEOUT = 1.0


class LossyClient(LosingClient):
    def __init__(self, proxy: FaultProxy, cluster: EtcdCluster, *also: str) -> None:
        super().__init__(proxy, cluster.tls(), *also, timeout=CLIENT_TIMEOUT)

POOL = "10.123.0.0/16"


@pytest.fixture(scope="module")
def proxy(etcd_cluster: EtcdCluster) -> Iterator[FaultProxy]:
    with FaultProxy(etcd_cluster.endpoints[0]) as p:
        yield p


@pytest.fixture
def lossy(etcd: EtcdClient, proxy: FaultProxy, etcd_cluster: EtcdCluster) -> Iterator[LossyClient]:
    proxy.disarm()
    client = LossyClient(proxy, etcd_cluster)
    yield client
    client.close()
    proxy.disarm()


@pytest.fixture
def pool(etcd: EtcdClient) -> IPPool:
    return ResourceStore(etcd).create(IPPool("lost-replies", {"cidr": POOL, "blockSize": 26}))


def _lost(client: LossyClient, before: int) -> int:
    return client.proxy.replies_lost - before


def assert_owned_exactly(etcd: EtcdClient, told: dict[str, set[str]], *, owned_by_resources: bool = False) -> None:
    """IPAM holds exactly ``told``: each handle owns those addresses (and counts them),
    nothing else is allocated, blocks and handles are sound."""
    ipam = IPAM(etcd)
    for handle, ips in told.items():
        assert {str(ip) for ip in ipam.ips_by_handle(handle)} == ips, handle
        kv = etcd.get(keys.handle_key(handle))
        assert (sum((kv.json().get("block") or {}).values()) if kv else 0) == len(ips), handle
    report = ipam.check()
    assert report.block_problems == [] and report.duplicate_owners == []
    assert report.handles_missing == [] and report.handles_without_ips == []
    allocated = {item["ip"]: item["handle"] for item in report.leaked}
    if owned_by_resources:
        assert report.ok, report.to_json()
    else:  # nothing owns raw IPAM allocations: every one shows as "leaked"; exactly ours
        assert allocated == {ip: h for h, ips in told.items() for ip in ips}
    assert report.allocations == sum(len(ips) for ips in told.values())


# ---- the client --------------------------------------------------------------------------


def test_a_write_whose_reply_is_lost_raises_outcome_unknown_and_is_sent_once(lossy: LossyClient) -> None:
    lossy.put("/calico/lost/k", "1")
    lossy.lose_write(1)
    before_requests, before_lost = lossy.proxy.requests, lossy.proxy.replies_lost
    with pytest.raises(OutcomeUnknown) as caught:
        lossy.put("/calico/lost/k", "2")
    assert _lost(lossy, before_lost) == 1
    assert lossy.proxy.requests - before_requests == 1  # not resent, not failed over
    assert caught.value.keys == ["/calico/lost/k"] and caught.value.endpoint == lossy.proxy.url
    assert "2" not in str(caught.value).split("sent to")[0].replace("/calico/lost/k", "")  # no value in it
    assert stored_value(lossy, "/calico/lost/k") == "2"  # it was applied


def test_the_cni_reconnecting_client_does_not_rerun_a_write_whose_reply_is_lost(
        proxy: FaultProxy, etcd: EtcdClient, etcd_cluster: EtcdCluster) -> None:
    from pycalico.cni.cache import ReconnectingEtcdClient

    class LosingReconnecting(LossyClient, ReconnectingEtcdClient):
        pass

    client = LosingReconnecting(proxy, etcd_cluster)
    client.put("/calico/lost/rc", "1")
    client.lose_write(1)
    before = proxy.requests
    with pytest.raises(OutcomeUnknown):
        client.put("/calico/lost/rc", "2")
    assert proxy.requests - before == 1
    assert stored_value(etcd, "/calico/lost/rc") == "2"
    client.close()


def test_a_read_whose_reply_is_lost_is_retried(lossy: LossyClient) -> None:
    lossy.put("/calico/lost/r", "v")
    before = lossy.proxy.replies_lost
    lossy.proxy.lose_replies(1)
    assert stored_value(lossy, "/calico/lost/r") == "v"  # again, on a new connection
    assert _lost(lossy, before) == 1


def test_a_read_whose_reply_times_out_fails_over(etcd: EtcdClient, proxy: FaultProxy,
                                                 etcd_cluster: EtcdCluster) -> None:
    client = LossyClient(proxy, etcd_cluster, etcd_cluster.endpoints[0])
    etcd.put("/calico/lost/r", "v")
    before = proxy.replies_lost
    proxy.lose_replies(1, mode="delay", delay=CLIENT_TIMEOUT + 1.5)
    assert stored_value(client, "/calico/lost/r") == "v"
    assert proxy.replies_lost - before == 1
    assert client.endpoints[client._preferred] == etcd_cluster.endpoints[0]  # noqa: SLF001
    client.close()


def test_a_write_fails_over_when_the_connection_is_refused(etcd: EtcdClient, etcd_cluster: EtcdCluster) -> None:
    client = EtcdClient([f"https://127.0.0.1:{free_port()}", *etcd_cluster.endpoints], etcd_cluster.tls())
    client.put("/calico/lost/f", "v")
    assert stored_value(etcd, "/calico/lost/f") == "v"
    client.close()


def test_a_write_on_a_kept_alive_connection_etcd_closed_is_sent_afresh(lossy: LossyClient) -> None:
    lossy.put("/calico/lost/c", "1")
    connections = lossy.proxy.connections
    lossy.proxy.close_connections()  # what an etcd restart does to idle connections
    lossy.put("/calico/lost/c", "2")  # found closed before writing: no OutcomeUnknown
    assert lossy.proxy.connections == connections + 1
    assert stored_value(lossy, "/calico/lost/c") == "2"


# ---- IPAM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("nth,mode", [(1, "close"), (2, "close"), (3, "close"), (4, "close"), (4, "delay")])
def test_auto_assign_settles_a_lost_reply(lossy: LossyClient, etcd: EtcdClient, pool: IPPool, nth: int,
                                          mode: str) -> None:
    """Writes 1-3 claim a block (pending affinity, block, confirmed affinity), 4 commits the address."""
    ipam = IPAM(lossy)
    before = lossy.proxy.replies_lost
    lossy.lose_write(nth, mode)
    [got] = ipam.auto_assign("h.first", {"pod": "a"}, "node-a")
    assert _lost(lossy, before) == 1
    [other] = ipam.auto_assign("h.second", {"pod": "b"}, "node-a")
    assert other.ip != got.ip
    assert_owned_exactly(etcd, {"h.first": {str(got.ip)}, "h.second": {str(other.ip)}})
    assert [cidr for cidr, (state, _) in IPAM(etcd).affinities("node-a").items() if state == "confirmed"] == \
        [str(ipaddress.ip_network(f"{got.ip}/26", strict=False))]


@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_assign_ip_settles_a_lost_reply(lossy: LossyClient, etcd: EtcdClient, pool: IPPool, nth: int) -> None:
    ipam = IPAM(lossy)
    before = lossy.proxy.replies_lost
    lossy.lose_write(nth)
    ipam.assign_ip("10.123.7.9", "h.fixed", {"pod": "a"}, "node-a")  # no false "already assigned"
    assert _lost(lossy, before) == 1
    assert_owned_exactly(etcd, {"h.fixed": {"10.123.7.9"}})


def test_release_by_handle_settles_a_lost_reply(lossy: LossyClient, etcd: EtcdClient, pool: IPPool) -> None:
    ipam = IPAM(lossy)
    [kept] = ipam.auto_assign("h.kept", {}, "node-a")
    ipam.auto_assign("h.gone", {}, "node-a", num=2)
    before = lossy.proxy.replies_lost
    lossy.lose_write(1)
    assert ipam.release_by_handle("h.gone") == 2
    assert _lost(lossy, before) == 1
    assert ipam.release_by_handle("h.gone") == 0
    assert_owned_exactly(etcd, {"h.kept": {str(kept.ip)}, "h.gone": set()})


def test_release_ips_settles_a_lost_reply(lossy: LossyClient, etcd: EtcdClient, pool: IPPool) -> None:
    ipam = IPAM(lossy)
    [kept] = ipam.auto_assign("h.kept", {}, "node-a")
    [gone] = ipam.auto_assign("h.gone", {}, "node-a")
    before = lossy.proxy.replies_lost
    lossy.lose_write(1, "delay")
    assert ipam.release_ips([str(gone.ip)]) == []  # freed by us, not "not allocated"
    assert _lost(lossy, before) == 1
    assert_owned_exactly(etcd, {"h.kept": {str(kept.ip)}, "h.gone": set()})


# ---- node side ------------------------------------------------------------------------------


@pytest.mark.parametrize("nth", [1, 2, 3, 4, 5])
def test_tunnel_address_assign_settles_a_lost_reply(lossy: LossyClient, etcd: EtcdClient, nth: int) -> None:
    """Writes 1-4 are IPAM's (claim, commit), 5 records the address on the Node."""
    store = ResourceStore(etcd)
    store.create(IPPool("tunnel-pool", {"cidr": POOL, "blockSize": 26, "ipipMode": "Always"}))
    store.create(Node("node-t", {"bgp": {"ipv4Address": "172.30.0.5/24"}}))
    before = lossy.proxy.replies_lost
    lossy.lose_write(nth)
    node = ensure_tunnel_addresses(ResourceStore(lossy), IPAM(lossy), "node-t")
    assert _lost(lossy, before) == 1
    stored = store.must_get(Node, "node-t")
    assert node.ipip_tunnel_addr and stored.ipip_tunnel_addr == node.ipip_tunnel_addr
    assert_owned_exactly(etcd, {tunnel_handle("ipip", "node-t"): {node.ipip_tunnel_addr}}, owned_by_resources=True)
    # a second run (an agent restart) keeps it
    assert ensure_tunnel_addresses(ResourceStore(etcd), IPAM(etcd), "node-t").ipip_tunnel_addr == \
        node.ipip_tunnel_addr


@pytest.mark.parametrize("mode", ["close", "delay"])
def test_node_registration_settles_a_lost_create_and_update(lossy: LossyClient, etcd: EtcdClient,
                                                            mode: str) -> None:
    settings = AgentSettings(nodename="node-r", as_number=64512)
    before = lossy.proxy.replies_lost
    lossy.lose_write(1, mode)
    created = register_node(ResourceStore(lossy), settings, ipaddress.IPv4Interface("172.30.0.7/24"))
    assert _lost(lossy, before) == 1
    kvs, _ = etcd.list(keys.resource_prefix(Node.PLURAL))
    assert [kv.key for kv in kvs] == [keys.resource_key(Node.PLURAL, "node-r")]
    stored = ResourceStore(etcd).must_get(Node, "node-r")
    assert stored.metadata["uid"] == created.metadata["uid"]  # ours, not a false "exists"
    assert stored.ip == "172.30.0.7"
    lossy.lose_write(1, mode)
    moved = register_node(ResourceStore(lossy), settings, ipaddress.IPv4Interface("172.30.0.8/24"))
    assert _lost(lossy, before) == 2
    assert ResourceStore(etcd).must_get(Node, "node-r").ip == moved.ip == "172.30.0.8"
    assert ResourceStore(etcd).must_get(Node, "node-r").metadata["uid"] == created.metadata["uid"]


@pytest.mark.parametrize("mode", ["close", "delay"])
def test_lease_grant_settles_a_lost_reply_without_a_second_lease(lossy: LossyClient, etcd: EtcdClient,
                                                                 mode: str) -> None:
    leases_before = set(etcd.leases())
    before = lossy.proxy.replies_lost
    lossy.lose_write(1, mode)
    keeper = LeaseKeeper(lossy, 30).start()
    try:
        assert _lost(lossy, before) == 1
        new = set(etcd.leases()) - leases_before
        assert new == {keeper.lease_id}
        assert etcd.lease_time_to_live(keeper.lease_id) > 0
    finally:
        keeper.stop()
    assert set(etcd.leases()) == leases_before


# ---- CNI ------------------------------------------------------------------------------------


@pytest.mark.netns
def test_cni_one_transaction_add_settles_a_lost_reply(unique: str) -> None:
    """The plugin's own ADD (IPAM block + handle + WorkloadEndpoint in one transaction)
    and DEL, in-process, with the reply to the transaction lost."""
    from pycalico.cni.plugin import PLUGIN, Context, Runtime, execute
    from pycalico.model import WorkloadEndpoint
    from tests.support.cni_env import CniEnv

    with CniEnv(unique, fast=False) as env:
        assert env.etcd is not None
        with FaultProxy(env.etcd.endpoints[0]) as proxy:
            lossy = LossyClient(proxy, env.etcd)

            class ProxiedRuntime(Runtime):
                def context(self, conf: Any) -> Context:
                    return Context(lossy, ResourceStore(lossy), IPAM(lossy, lock_dir=str(env.base / "run")))

            runtime = ProxiedRuntime()
            stdin = json.dumps(env.netconf()).encode()
            told: dict[str, set[str]] = {}
            pods: dict[str, str] = {}
            # The first ADD claims a block (writes 1-3) and then sends the one transaction (4).
            for index, (nth, mode) in enumerate([(4, "close"), (1, "delay"), (1, "close")]):
                _, ns_path, _ = env.new_pod(index)
                # real container IDs differ in their first 11 characters, which name a plain CNI
                # container's host veth (the env's IDs share the test prefix there)
                container_id = f"{uuid.uuid4().hex[:12]}{index}"
                before = proxy.replies_lost
                lossy.lose_write(nth, mode)
                code, out = execute(PLUGIN, env.env("ADD", container_id, ns_path), stdin, runtime)
                assert code == 0, out
                assert proxy.replies_lost - before == 1
                told[f"k8s-pod-network.{container_id}"] = {json.loads(out)["ips"][0]["address"].split("/")[0]}
                pods[container_id] = ns_path
            weps = ResourceStore(env.client).list(WorkloadEndpoint)
            assert sorted(w.ip_networks[0] for w in weps) == sorted(f"{next(iter(v))}/32" for v in told.values())
            assert_owned_exactly(env.client, told, owned_by_resources=True)

            gone, ns_path = next(iter(pods.items()))
            before = proxy.replies_lost
            lossy.lose_write(1)
            code, out = execute(PLUGIN, env.env("DEL", gone, ns_path), stdin, runtime)
            assert code == 0, out
            assert proxy.replies_lost - before == 1
            told[f"k8s-pod-network.{gone}"] = set()
            assert len(ResourceStore(env.client).list(WorkloadEndpoint)) == 2
            assert_owned_exactly(env.client, told, owned_by_resources=True)
            lossy.close()


# ---- a small storm -------------------------------------------------------------------------


def test_ipam_storm_while_the_leader_is_killed_twice_assigns_nothing_twice() -> None:
    """bench/datastore_faults.py's storm, smaller: 4 processes, >= 300 operations,
    the leader of a 3-member etcd killed and restarted twice."""
    from bench.datastore_faults import storm

    ledger, result, kills = storm(procs=4, total_ops=300, kills=2, log=lambda _: None)
    assert kills == 2 and ledger.ops >= 300
    assert result == {"double_assigned": 0, "leaked": 0, "duplicates": 0, "lost": 0, "block_problems": 0}
