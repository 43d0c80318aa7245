"""pycalico.network.ippool against the real etcd: check mode, real run, idempotence, diffs, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.ipam import IPAM
from pycalico.model import IPPool, ResourceStore
from tests.collection.conftest import snapshot

POOL = "default-ipv4-ippool"


def test_create_in_check_mode_then_real_then_unchanged(ansible_cli, etcd):
    args = {"cidr": "172.20.0.0/16", "ipip_mode": "Always", "nat_outgoing": True}
    store = ResourceStore(etcd)

    checked = ansible_cli("ippool", check=True, **args)
    assert checked["changed"] is True
    assert checked["diff"]["before"] == {}
    assert checked["diff"]["after"]["spec"]["cidr"] == "172.20.0.0/16"
    assert checked["diff"]["after"]["spec"]["ipipMode"] == "Always"
    assert checked["diff"]["after"]["spec"]["blockSize"] == 26
    assert store.get(IPPool, POOL) is None, "check mode wrote to etcd"

    real = ansible_cli("ippool", **args)
    assert real["changed"] is True
    assert real["diff"] == checked["diff"]
    stored = store.get(IPPool, POOL)
    assert stored is not None and stored.ipip_mode == "Always" and stored.nat_outgoing is True

    again = ansible_cli("ippool", **args)
    assert again["changed"] is False
    assert again["diff"]["before"] == again["diff"]["after"]
    assert store.get(IPPool, POOL).resource_version == stored.resource_version


def test_changed_modes_are_reconciled_in_place(ansible_cli, etcd):
    store = ResourceStore(etcd)
    ansible_cli("ippool", cidr="172.20.0.0/16", ipip_mode="Always", nat_outgoing=True)
    uid = store.get(IPPool, POOL).metadata["uid"]

    # kubeasz #774: IPIP off after install. Only the changed fields show in the diff.
    change = {"ipip_mode": "Never", "vxlan_mode": "Always", "nat_outgoing": False}
    checked = ansible_cli("ippool", check=True, **change)
    assert checked["changed"] is True
    before, after = checked["diff"]["before"]["spec"], checked["diff"]["after"]["spec"]
    assert (before["ipipMode"], before["vxlanMode"], before["natOutgoing"]) == ("Always", "Never", True)
    assert (after["ipipMode"], after["vxlanMode"], after["natOutgoing"]) == ("Never", "Always", False)
    assert {k: v for k, v in before.items() if after.get(k) != v} == {
        "ipipMode": "Always", "vxlanMode": "Never", "natOutgoing": True}
    assert store.get(IPPool, POOL).ipip_mode == "Always"

    real = ansible_cli("ippool", **change)
    assert real["changed"] is True
    pool = store.get(IPPool, POOL)
    assert (pool.ipip_mode, pool.vxlan_mode, pool.nat_outgoing) == ("Never", "Always", False)
    assert pool.metadata["uid"] == uid, "the pool was recreated instead of updated"

    assert ansible_cli("ippool", **change)["changed"] is False


def test_delete_check_mode_then_real_then_absent(run_module, etcd):
    store = ResourceStore(etcd)
    run_module("ippool", name="old-pool", cidr="10.99.0.0/16")
    checked = run_module("ippool", check=True, name="old-pool", state="absent")
    assert checked["changed"] is True
    assert checked["diff"]["before"]["spec"]["cidr"] == "10.99.0.0/16"
    assert checked["diff"]["after"] == {}
    assert store.get(IPPool, "old-pool") is not None
    assert run_module("ippool", name="old-pool", state="absent")["changed"] is True
    assert store.get(IPPool, "old-pool") is None
    again = run_module("ippool", name="old-pool", state="absent")
    assert again["changed"] is False and again["diff"] == {"before": {}, "after": {}}


def test_unused_pool_cidr_change_replaces_the_pool(run_module, etcd):
    store = ResourceStore(etcd)
    run_module("ippool", cidr="10.98.0.0/16")
    checked = run_module("ippool", check=True, cidr="10.97.0.0/16")
    assert checked["changed"] is True and checked["replaced"] is True
    assert store.get(IPPool, POOL).cidr == "10.98.0.0/16"
    real = run_module("ippool", cidr="10.97.0.0/16")
    assert real["changed"] is True and real["replaced"] is True
    assert store.get(IPPool, POOL).cidr == "10.97.0.0/16"
    assert run_module("ippool", cidr="10.97.0.0/16")["changed"] is False


def _allocate(etcd: Any, ip: str) -> None:
    IPAM(etcd).assign_ip(ip, "test-handle", {"note": "test"}, "node-a")


def test_force_deletes_a_pool_in_use(run_module, etcd):
    run_module("ippool", cidr="10.96.0.0/16")
    _allocate(etcd, "10.96.0.5")
    result = run_module("ippool", state="absent", force=True)
    assert result["changed"] is True and result["allocations"] == 1
    assert ResourceStore(etcd).get(IPPool, POOL) is None


# ---- refusals: each names the option and what is allowed, and writes nothing ----------------------

EXISTING = {"name": "existing", "cidr": "10.10.0.0/16", "block_size": 26}

BAD = [
    # (module, args, message fragments)
    ("ippool", {"cidr": "172.20.0.0/33"}, ["cidr: spec.cidr: invalid value '172.20.0.0/33'", "not a CIDR"]),
    ("ippool", {"cidr": "172.20.1.0/16"}, ["cidr: spec.cidr", "host bits set"]),
    ("ippool", {"name": "no-cidr", "ipip_mode": "Always"}, ["cidr: spec.cidr", "required to create a pool"]),
    ("ippool", {"cidr": "172.20.0.0/16", "block_size": 19}, ["block_size: spec.blockSize: invalid value 19",
                                                             "from 20 to 32"]),
    ("ippool", {"cidr": "172.20.0.0/24", "block_size": 22}, ["cidr: spec.cidr",
                                                             "no longer than the block size /22"]),
    # Options with a fixed set of values: the argument spec's choices (the model's, tests/collection/test_choices.py).
    ("ippool", {"cidr": "172.20.0.0/16", "ipip_mode": "Sometimes"}, ["value of ipip_mode must be one of: "
                                                                     "Never, Always, CrossSubnet, got: Sometimes"]),
    ("ippool", {"cidr": "172.20.0.0/16", "vxlan_mode": "always"}, ["vxlan_mode", "Never, Always, CrossSubnet",
                                                                   "got: always"]),
    ("ippool", {"cidr": "172.20.0.0/16", "ipip_mode": "Always", "vxlan_mode": "CrossSubnet"},
     ["ipip_mode: spec.ipipMode", "cannot both be enabled"]),
    ("ippool", {"cidr": "169.254.0.0/16"}, ["cidr: spec.cidr", "does not overlap 169.254.0.0/16"]),
    ("ippool", {"cidr": "172.20.0.0/16", "node_selector": "has("}, ["node_selector: spec.nodeSelector"]),
    ("ippool", {"cidr": "172.20.0.0/16", "allowed_uses": ["Everything"]}, ["allowed_uses",
                                                                           "Workload, Tunnel, LoadBalancer",
                                                                           "Everything"]),
    ("ippool", {"name": "Upper_Case", "cidr": "172.20.0.0/16"}, ["name: metadata.name", "lowercase"]),
    ("ippool", {"name": "overlapping", "cidr": "10.10.128.0/17"}, ["cidr: spec.cidr", "overlaps with "
                                                                   "IPPool(existing)"]),
    ("ippool", {"name": "existing", "block_size": 28}, ["block_size: spec.blockSize",
                                                        "block size of a pool cannot change"]),
    ("ippool", {"name": "existing", "cidr": "10.11.0.0/16"},
     ["cidr: spec.cidr", "allowed: 10.10.0.0/16 (the CIDR of a pool in use cannot change)",
      "1 allocated address(es) in 1 block(s)"]),
    ("ippool", {"name": "existing", "state": "absent"}, ["still has 1 allocated address(es)", "force=true"]),
    ("ippool", {"cidr": "172.20.0.0/16", "state": "gone"}, ["value of state must be one of: present, absent"]),
    ("bgp_peer", {"name": "p", "peer_ip": "300.1.1.1"}, ["peer_ip: spec.peerIP", "IPv4/IPv6 address"]),
    ("bgp_peer", {"name": "p", "peer_ip": "10.0.0.1", "node": "a", "node_selector": "all()"},
     ["node_selector: spec.nodeSelector", "empty when spec.node is set"]),
    ("bgp_peer", {"name": "p"}, ["peer_ip: spec.peerIP", "or set spec.peerSelector"]),
    ("bgp_peer", {"name": "p", "peer_ip": "10.0.0.1", "as_number": 0}, ["as_number: spec.asNumber",
                                                                        "from 1 to 4294967295"]),
    ("bgp_configuration", {"log_severity_screen": "Loud"}, ["log_severity_screen must be one of: Debug, Info",
                                                            "got: Loud"]),
    ("bgp_configuration", {"listen_port": 70000}, ["listen_port: spec.listenPort", "from 1 to 65535"]),
    ("node", {"name": "nowhere", "labels": {"a": "b"}}, ["Node 'nowhere' is not registered"]),
]


@pytest.mark.parametrize("module,args,fragments", BAD, ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(BAD)])
def test_bad_parameters_fail_with_a_message_and_write_nothing(run_module, etcd, module, args, fragments):
    run_module("ippool", **EXISTING)
    _allocate(etcd, "10.10.0.7")
    before = snapshot(etcd)

    for check in (True, False):
        result = run_module(module, check=check, **args)
        assert result.get("failed") is True, result
        for fragment in fragments:
            assert fragment in result["msg"], f"{fragment!r} not in {result['msg']!r}"
        assert snapshot(etcd) == before, "a refused change wrote to etcd"


def test_unreachable_etcd_fails_with_the_endpoint(run_module, etcd, connection):
    result = run_module("ippool", cidr="172.20.0.0/16", etcd_endpoints=["https://127.0.0.1:9"])
    assert result["failed"] is True
    assert "https://127.0.0.1:9" in result["msg"]
