"""ResourceStore: Calico's create/update/apply/delete semantics on a real etcd."""

from __future__ import annotations

import json

import pytest

from pycalico.datastore.etcd import EtcdClient
from pycalico.errors import ResourceExists, ResourceNotFound, RevisionConflict, ValidationError
from pycalico.model import BGPPeer, IPPool, Node, ResourceStore, WorkloadEndpoint


def test_create_sets_uid_and_timestamp_and_never_stores_resource_version(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    created = store.create(IPPool("p1", {"cidr": "10.244.0.0/16"}))
    raw = json.loads(etcd.get(created.key()).value)  # type: ignore[union-attr]
    assert "resourceVersion" not in raw["metadata"]
    assert raw["metadata"]["uid"] and raw["metadata"]["creationTimestamp"].endswith("Z")
    assert raw["spec"]["blockSize"] == 26 and raw["spec"]["nodeSelector"] == "all()"
    read = store.get(IPPool, "p1")
    assert read is not None and read.resource_version == str(etcd.get(created.key()).mod_revision)  # type: ignore
    with pytest.raises(ResourceExists):
        store.create(IPPool("p1", {"cidr": "10.245.0.0/16"}))


def test_update_is_compare_and_swap_on_resource_version(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    store.create(Node("n1", {}))
    a = store.must_get(Node, "n1")
    b = store.must_get(Node, "n1")
    a.spec["bgp"] = {"ipv4Address": "10.0.0.1/24"}
    store.update(a)
    b.spec["bgp"] = {"ipv4Address": "10.0.0.2/24"}
    with pytest.raises(RevisionConflict):
        store.update(b)
    assert store.must_get(Node, "n1").ipv4_address == "10.0.0.1/24"
    with pytest.raises(ResourceNotFound):
        store.must_get(Node, "n2")


def test_apply_upserts_and_keeps_identity(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    first = store.apply(BGPPeer("tor", {"peerIP": "10.0.0.254", "asNumber": 65000}))
    second = store.apply(BGPPeer("tor", {"peerIP": "10.0.0.254", "asNumber": 65001}))
    assert second.metadata["uid"] == first.metadata["uid"]
    assert store.must_get(BGPPeer, "tor").as_number == 65001


def test_pool_overlap_and_immutable_fields_are_refused(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    store.create(IPPool("p1", {"cidr": "10.244.0.0/16"}))
    with pytest.raises(ValidationError) as err:
        store.create(IPPool("p2", {"cidr": "10.244.128.0/17"}))
    assert "IPPool(p2) CIDR overlaps with IPPool(p1)" in str(err.value)
    changed = store.must_get(IPPool, "p1")
    changed.spec["blockSize"] = 24
    with pytest.raises(ValidationError) as err:
        store.update(changed)
    assert err.value.field == "spec.blockSize" and "cannot change" in str(err.value)
    assert store.must_get(IPPool, "p1").block_size == 26


def test_invalid_resource_writes_nothing(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    with pytest.raises(ValidationError):
        store.create(IPPool("bad", {"cidr": "10.0.0.1/8"}))
    assert etcd.list("/calico/")[0] == []


def test_namespaced_list_and_delete(etcd: EtcdClient) -> None:
    store = ResourceStore(etcd)
    for ns, name in (("default", "n1-cni-a-eth0"), ("kube-system", "n1-cni-b-eth0")):
        store.create(WorkloadEndpoint(name, {"orchestrator": "cni", "node": "n1"}, namespace=ns))
    assert sorted(w.name for w in store.list(WorkloadEndpoint)) == ["n1-cni-a-eth0", "n1-cni-b-eth0"]
    assert [w.name for w in store.list(WorkloadEndpoint, "default")] == ["n1-cni-a-eth0"]
    wep = store.must_get(WorkloadEndpoint, "n1-cni-a-eth0", "default")
    assert wep.labels == {"projectcalico.org/namespace": "default", "projectcalico.org/orchestrator": "cni"}
    assert store.delete(WorkloadEndpoint, "n1-cni-a-eth0", "default") is True
    assert store.delete(WorkloadEndpoint, "n1-cni-a-eth0", "default") is False
