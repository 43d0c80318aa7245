"""Block IPAM against a real etcd."""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import random
import tempfile
from pathlib import Path

import pytest

from pycalico.datastore.etcd import EtcdClient
from pycalico.errors import KeyExists, PoolExhausted
from pycalico.ipam import IPAM, AllocationBlock, IpamConfig, handle_id, tunnel_attrs, tunnel_handle
from pycalico.lifecycle import remove_node
from pycalico.model import BGPPeer, IPPool, Node, ResourceStore, WorkloadEndpoint, keys, wep_name
from tests.support.etcd import EtcdCluster


def setup_pool(etcd: EtcdClient, cidr: str = "10.244.0.0/16", block_size: int = 26, **spec: object) -> IPPool:
    store = ResourceStore(etcd)
    return store.create(IPPool("pool1", {"cidr": cidr, "blockSize": block_size, **spec}))


def add_wep(store: ResourceStore, node: str, cid: str, ip: str) -> None:
    store.create(WorkloadEndpoint(wep_name(node, "cni", cid, "eth0"),
                                  {"orchestrator": "cni", "node": node, "containerID": cid, "endpoint": "eth0",
                                   "ipNetworks": [f"{ip}/32"]}, namespace="default"))


def test_assign_claims_an_affine_block_and_stores_calico_json(etcd: EtcdClient) -> None:
    setup_pool(etcd)
    ipam = IPAM(etcd)
    [ip] = ipam.auto_assign(handle_id("k8s-pod-network", "c1"), {"node": "n1"}, "n1")
    assert ip.network.prefixlen == 26
    block_cidr = str(ip.network)
    aff = etcd.get(keys.affinity_key("n1", block_cidr))
    assert aff is not None and json.loads(aff.value) == {"state": "confirmed", "deleted": False}
    block = json.loads(etcd.get(keys.block_key(block_cidr)).value)  # type: ignore[union-attr]
    assert block["affinity"] == "host:n1" and block["cidr"] == block_cidr
    assert block["allocations"][0] == 0 and block["unallocated"][0] == 1
    assert block["attributes"] == [{"handle_id": "k8s-pod-network.c1", "secondary": {"node": "n1"}}]
    handle = json.loads(etcd.get(keys.handle_key("k8s-pod-network.c1")).value)  # type: ignore[union-attr]
    assert handle == {"block": {block_cidr: 1}, "deleted": False}
    assert str(ip.ip) == str(ipaddress.ip_network(block_cidr).network_address)  # ordinal 0 is used


def test_affine_block_is_filled_before_a_new_one_is_claimed(etcd: EtcdClient) -> None:
    setup_pool(etcd, block_size=29)
    ipam = IPAM(etcd)
    ips = [ipam.auto_assign(f"net.c{i}", {}, "n1")[0] for i in range(12)]
    blocks = {str(i.network) for i in ips}
    assert len(blocks) == 2
    assert len(ipam.affinities("n1")) == 2


def test_release_is_idempotent_and_reuse_is_as_late_as_possible(etcd: EtcdClient) -> None:
    setup_pool(etcd, block_size=29)
    ipam = IPAM(etcd)
    first = ipam.auto_assign("net.a", {}, "n1")[0]
    assert ipam.release_by_handle("net.a") == 1
    assert ipam.release_by_handle("net.a") == 0
    assert etcd.get(keys.handle_key("net.a")) is None
    later = [ipam.auto_assign(f"net.b{i}", {}, "n1")[0] for i in range(7)]
    assert first not in later  # the 7 other addresses of the /29 come first
    assert ipam.auto_assign("net.c", {}, "n1")[0].ip == first.ip


def test_borrowing_from_another_hosts_block_when_pool_is_full(etcd: EtcdClient) -> None:
    setup_pool(etcd, cidr="10.244.0.0/28", block_size=28)
    ipam = IPAM(etcd)
    for i in range(15):
        ipam.auto_assign(f"net.a{i}", {}, "n1")
    [borrowed] = ipam.auto_assign("net.b", {}, "n2")
    assert str(borrowed.network) == "10.244.0.0/28"
    assert ipam.affinities("n2") == {}
    with pytest.raises(PoolExhausted):
        ipam.auto_assign("net.c", {}, "n2")


def test_strict_affinity_full_pool_is_a_clear_pool_exhausted_error(etcd: EtcdClient) -> None:
    setup_pool(etcd, cidr="10.244.0.0/28", block_size=28)
    ipam = IPAM(etcd)
    ipam.set_config(IpamConfig(strict_affinity=True))
    ipam.auto_assign("net.a", {}, "n1")
    with pytest.raises(PoolExhausted) as err:
        ipam.auto_assign("net.b", {}, "n2")
    assert "pool exhausted" in str(err.value) and "pool1" in str(err.value) and "strictAffinity" in str(err.value)
    assert etcd.get(keys.handle_key("net.b")) is None


def test_multi_address_request_that_cannot_be_met_leaves_nothing_behind(etcd: EtcdClient) -> None:
    setup_pool(etcd, cidr="10.244.0.0/29", block_size=29)
    ipam = IPAM(etcd)
    with pytest.raises(PoolExhausted):
        ipam.auto_assign("net.big", {}, "n1", num=9)
    assert ipam.ips_by_handle("net.big") == []
    block = AllocationBlock.from_json(json.loads(etcd.get(keys.block_key("10.244.0.0/29")).value))  # type: ignore
    assert block.is_empty()


def test_node_selector_and_allowed_uses_pick_the_pool(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    store.create(IPPool("zone-a", {"cidr": "10.1.0.0/16", "nodeSelector": "zone == 'a'"}))
    store.create(IPPool("tunnels", {"cidr": "10.2.0.0/16", "allowedUses": ["Tunnel"]}))
    store.create(Node("n1", metadata={"name": "n1", "labels": {"zone": "a"}}))
    ipam = IPAM(etcd)
    [pod] = ipam.auto_assign("net.p", {}, "n1")
    assert pod.ip in ipaddress.ip_network("10.1.0.0/16")
    [tun] = ipam.auto_assign(tunnel_handle("vxlan", "n2"), tunnel_attrs("vxlan", "n2"), "n2", use="Tunnel")
    assert tun.ip in ipaddress.ip_network("10.2.0.0/16")
    with pytest.raises(PoolExhausted) as err:
        ipam.auto_assign("net.q", {}, "n2")  # n2 has no zone label and tunnels pool is Tunnel-only
    assert "no enabled IPv4 pool" in str(err.value)
    block = AllocationBlock.from_json(json.loads(etcd.get(keys.block_key(str(tun.network))).value))  # type: ignore
    assert block.attributes[0] == {"handle_id": "vxlan-tunnel-addr-n2",
                                   "secondary": {"node": "n2", "type": "vxlanTunnelAddress"}}


def test_check_finds_leaks_and_release_leaked_cleans_them(etcd: EtcdClient) -> None:
    setup_pool(etcd)
    store = ResourceStore(etcd)
    ipam = IPAM(etcd)
    [used] = ipam.auto_assign("net.used", {}, "n1")
    [leak] = ipam.auto_assign("net.leak", {}, "n1")
    [tun] = ipam.auto_assign(tunnel_handle("ipip", "n1"), tunnel_attrs("ipip", "n1"), "n1", use="Tunnel")
    add_wep(store, "n1", "used", str(used.ip))
    store.create(Node("n1", {"bgp": {"ipv4Address": "10.0.0.1/24", "ipv4IPIPTunnelAddr": str(tun.ip)}}))
    report = ipam.check()
    assert [item["ip"] for item in report.leaked] == [str(leak.ip)]
    assert report.leaked[0]["handle"] == "net.leak"
    assert not report.ok and report.block_problems == []
    assert ipam.release_leaked(report) == [str(leak.ip)]
    assert ipam.check().ok


def test_remove_node_releases_blocks_endpoints_peers_and_the_node(etcd: EtcdClient) -> None:
    setup_pool(etcd)
    store = ResourceStore(etcd)
    ipam = IPAM(etcd)
    [a] = ipam.auto_assign("net.a", {}, "gone")
    [b] = ipam.auto_assign("net.b", {}, "stays")
    add_wep(store, "gone", "a", str(a.ip))
    add_wep(store, "stays", "b", str(b.ip))
    [tun] = ipam.auto_assign(tunnel_handle("vxlan", "gone"), tunnel_attrs("vxlan", "gone"), "gone", use="Tunnel")
    store.create(Node("gone", {"ipv4VXLANTunnelAddr": str(tun.ip)}))
    store.create(Node("stays", {}))
    store.create(BGPPeer("gone-tor", {"node": "gone", "peerIP": "10.0.0.254", "asNumber": 65000}))
    plan = remove_node(store, ipam, "gone")
    assert plan.node_exists and plan.bgp_peers == ["gone-tor"] and len(plan.affinities) == 1
    assert store.get(Node, "gone") is None and store.get(BGPPeer, "gone-tor") is None
    assert ipam.affinities("gone") == {}
    assert [w.node for w in store.list(WorkloadEndpoint)] == ["stays"]
    assert ipam.check().ok
    assert etcd.list(keys.HOST_AFFINITY_ROOT + "gone/")[0] == []
    assert remove_node(store, ipam, "gone").empty  # a second removal finds nothing to do


def _storm_worker(endpoints: list[str], tls: tuple[str, str, str], host: str, worker: int, lock_dir: str,
                  rounds: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from pycalico.datastore.etcd import EtcdClient, TlsConfig

    client = EtcdClient(endpoints, TlsConfig(*tls), timeout=10)
    ipam = IPAM(client, lock_dir=lock_dir)
    rng = random.Random(f"{host}-{worker}")
    held: list[tuple[str, str]] = []
    assigned = released = 0
    for i in range(rounds):
        if held and rng.random() < 0.4:
            handle, _ = held.pop(rng.randrange(len(held)))
            released += ipam.release_by_handle(handle)
        else:
            handle = f"storm.{host}-{worker}-{i}"
            [ip] = ipam.auto_assign(handle, {"node": host}, host)
            held.append((handle, str(ip.ip)))
            assigned += 1
    out.put({"host": host, "assigned": assigned, "released": released, "held": held})


def test_ipam_storm_has_no_duplicates_no_leaks_and_consistent_blocks(etcd: EtcdClient,
                                                                     etcd_cluster: EtcdCluster) -> None:
    """3 simulated hosts × 4 processes interleave ≥1,000 assigns and releases."""
    setup_pool(etcd, cidr="10.250.0.0/20", block_size=27)
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    pki = etcd_cluster.pki
    tls = (str(pki.ca), str(pki.client_cert), str(pki.client_key))
    rounds = 130
    with tempfile.TemporaryDirectory(prefix="pct-ipamlock-") as lock_dir:
        procs = [ctx.Process(target=_storm_worker, args=(etcd_cluster.endpoints, tls, f"host{h}", w,
                                                         str(Path(lock_dir) / f"host{h}"), rounds, out))
                 for h in range(3) for w in range(4)]
        for p in procs:
            p.start()
        try:
            results = [out.get(timeout=300) for _ in procs]
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
    assert all(p.exitcode == 0 for p in procs)
    operations = sum(r["assigned"] + r["released"] for r in results)
    assert operations >= 1000
    held = [ip for r in results for _, ip in r["held"]]
    assert len(held) == len(set(held)), "an address was handed out twice"

    store = ResourceStore(etcd)
    ipam = IPAM(etcd)
    for r in results:
        for handle, ip in r["held"]:
            add_wep(store, r["host"], handle.split(".", 1)[1], ip)
            assert [str(a) for a in ipam.ips_by_handle(handle)] == [ip]
    report = ipam.check()
    assert report.leaked == [] and report.not_allocated == [] and report.duplicate_owners == []
    assert report.block_problems == [] and report.handles_without_ips == [] and report.handles_missing == []
    assert report.allocations == len(held)
    for block in ipam.blocks():
        owner = block.host()
        assert owner is not None and block.cidr in ipam.affinities(owner)


def test_extra_keys_are_created_in_the_assigning_transaction(etcd: EtcdClient) -> None:
    setup_pool(etcd)
    ipam = IPAM(etcd)
    seen: list[list[str]] = []

    def endpoint(addrs: list) -> dict[str, str]:
        seen.append([str(a.ip) for a in addrs])
        return {"/test/extra/c1": json.dumps({"ips": seen[-1]})}

    [ip] = ipam.auto_assign("net.c1", {}, "n1", extra_puts=endpoint)
    assert seen == [[str(ip.ip)]]
    extra = etcd.get("/test/extra/c1")
    block = etcd.get(keys.block_key(str(ip.network)))
    assert extra is not None and block is not None
    assert json.loads(extra.value) == {"ips": [str(ip.ip)]}
    assert extra.mod_revision == block.mod_revision  # one transaction

    # The extra key exists now: nothing is assigned, and the error names the key.
    before = etcd.get(keys.block_key(str(ip.network)))
    with pytest.raises(KeyExists) as err:
        ipam.auto_assign("net.c2", {}, "n1", extra_puts=lambda addrs: {"/test/extra/c1": "{}"})
    assert err.value.key == "/test/extra/c1"
    assert etcd.get(keys.block_key(str(ip.network))).mod_revision == before.mod_revision  # type: ignore[union-attr]
    assert etcd.get(keys.handle_key("net.c2")) is None
    assert json.loads(etcd.get("/test/extra/c1").value) == {"ips": [str(ip.ip)]}  # type: ignore[union-attr]


def test_extra_keys_follow_addresses_from_several_blocks(etcd: EtcdClient) -> None:
    setup_pool(etcd, block_size=30)
    ipam = IPAM(etcd)
    got = ipam.auto_assign("net.multi", {}, "n1", 6, extra_puts=lambda addrs: {"/test/extra/multi": str(len(addrs))})
    assert len({str(a.network) for a in got}) == 2
    assert etcd.get("/test/extra/multi").value == "6"  # type: ignore[union-attr]
    with pytest.raises(KeyExists):
        ipam.auto_assign("net.multi2", {}, "n1", 6, extra_puts=lambda addrs: {"/test/extra/multi": "x"})
    assert ipam.ips_by_handle("net.multi2") == []  # the first block's addresses went back
