"""network_policy, global_network_policy, network_set, global_network_set, host_endpoint and
profile against the real etcd: check mode -> real -> second run with diffs, updates,
removal, the invalid-policy table refused with the field named and nothing written,
and the cluster-wide policies of network.yml."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from pycalico.model import KINDS, GlobalNetworkPolicy, GlobalNetworkSet, ResourceStore
from tests.collection.conftest import REPO, snapshot
from tests.collection.test_playbooks import local_inventory, recap  # noqa: F401 (a fixture)
from tests.unit.test_ctl_resources import BAD_POLICIES, SAMPLES

MODULES = {
    "NetworkPolicy": "network_policy",
    "GlobalNetworkPolicy": "global_network_policy",
    "NetworkSet": "network_set",
    "GlobalNetworkSet": "global_network_set",
    "HostEndpoint": "host_endpoint",
    "Profile": "profile",
}


def _where(kind: str) -> dict[str, Any]:
    return {"namespace": "shop"} if KINDS[kind].NAMESPACED else {}


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_check_real_second_update_and_absent(run_module, etcd, kind):
    module, cls, store = MODULES[kind], KINDS[kind], ResourceStore(etcd)
    first, second = SAMPLES[kind]
    ns = "shop" if cls.NAMESPACED else None
    args = {"name": "sample", **_where(kind), "spec": first, "labels": {"team": "a"}}

    checked = run_module(module, check=True, **args)
    assert checked["changed"] is True and checked["diff"]["before"] == {}
    after = checked["diff"]["after"]
    assert after["kind"] == kind and after["metadata"]["labels"]["team"] == "a"
    assert all(after["spec"][k] == v for k, v in first.items())
    assert snapshot(etcd) == {}, "check mode wrote to etcd"

    real = run_module(module, **args)
    assert real["changed"] is True and real["diff"] == checked["diff"] and real["resource"] == after
    stored = store.get(cls, "sample", ns)
    assert stored is not None and stored.labels["team"] == "a"
    version = stored.resource_version

    again = run_module(module, **args)
    assert again["changed"] is False and again["diff"]["before"] == again["diff"]["after"]
    assert store.get(cls, "sample", ns).resource_version == version

    # A new spec: the diff shows both; labels left out are kept.
    update = {"name": "sample", **_where(kind), "spec": second}
    checked = run_module(module, check=True, **update)
    assert checked["changed"] is True
    assert checked["diff"]["before"]["spec"] == stored.spec
    assert all(checked["diff"]["after"]["spec"][k] == v for k, v in second.items())
    assert store.get(cls, "sample", ns).resource_version == version
    assert run_module(module, **update)["changed"] is True
    updated = store.get(cls, "sample", ns)
    assert updated.metadata["uid"] == stored.metadata["uid"] and updated.labels["team"] == "a"
    assert all(updated.spec[k] == v for k, v in second.items())
    assert run_module(module, **update)["changed"] is False

    gone = {"name": "sample", **_where(kind), "state": "absent"}
    checked = run_module(module, check=True, **gone)
    assert checked["changed"] is True and checked["diff"]["after"] == {}
    assert store.get(cls, "sample", ns) is not None
    assert run_module(module, **gone)["changed"] is True
    assert store.get(cls, "sample", ns) is None
    assert run_module(module, **gone)["changed"] is False


def test_through_the_ansible_cli_with_labels_replaced(ansible_cli, etcd):
    store = ResourceStore(etcd)
    spec = {"nets": ["192.0.2.0/24"]}
    created = ansible_cli("global_network_set", name="outside", spec=spec, labels={"role": "outside", "x": "1"})
    assert created["changed"] is True and created["resource"]["spec"] == spec
    relabelled = ansible_cli("global_network_set", name="outside", spec=spec, labels={"role": "outside"})
    assert relabelled["changed"] is True
    assert relabelled["diff"]["before"]["metadata"]["labels"] == {"role": "outside", "x": "1"}
    assert store.get(GlobalNetworkSet, "outside").labels == {"role": "outside"}
    assert ansible_cli("global_network_set", name="outside", spec=spec, labels={"role": "outside"})[
        "changed"] is False


# The same table of invalid policies the CLI refuses (tests/unit/test_ctl_resources.py), through the modules.
MODULE_BAD = [pytest.param(kind, spec, field, id=case) for case, kind, spec, field in BAD_POLICIES
              if kind in MODULES]


@pytest.mark.parametrize(("kind", "spec", "field"), MODULE_BAD)
def test_invalid_policies_fail_with_the_field_and_write_nothing(run_module, etcd, kind, spec, field):
    before = snapshot(etcd)
    for check in (True, False):
        result = run_module(MODULES[kind], check=check, name="bad", **_where(kind), spec=spec)
        assert result.get("failed") is True, result
        assert result["msg"].startswith(field), result["msg"]
        assert result["field"].startswith(field), result
    assert snapshot(etcd) == before


def test_invalid_name_and_labels_fail(run_module, etcd):
    bad_name = run_module("global_network_policy", name="Bad_Name", spec={})
    assert bad_name["failed"] is True and bad_name["msg"].startswith("metadata.name")
    bad_labels = run_module("network_set", name="n", spec={"nets": []}, labels={"a": {"b": "c"}})
    assert bad_labels["failed"] is True and "metadata.labels" in bad_labels["msg"]
    assert snapshot(etcd) == {}


# issue 13 item 2 through the modules: misspelt options are refused by Ansible's argument spec, misspelt
# spec fields (the policy modules' table above has five more) by the model; nothing is written.
@pytest.mark.parametrize(("module", "args", "option"), [
    ("bgp_peer", {"name": "p", "peer_ip": "192.0.2.1", "as_numbr": 64513}, "as_numbr"),
    ("ippool", {"cidr": "10.50.0.0/16", "nat_outgoin": True}, "nat_outgoin"),
    ("bgp_configuration", {"node_to_node_mesh_enabled": False}, "node_to_node_mesh_enabled"),
    ("node", {"name": "n1", "label": {"a": "b"}}, "label"),
    ("cluster_identity", {"cluster_name": "c1", "clame": True}, "clame"),
    ("global_network_policy", {"name": "p", "spec": {}, "lables": {}}, "lables"),
    ("network_set", {"name": "s", "namespce": "shop", "spec": {}}, "namespce"),
    ("host_endpoint", {"name": "h", "specs": {}}, "specs"),
])
def test_unknown_module_options_are_refused(run_module, etcd, module, args, option):
    result = run_module(module, **args)
    assert result["failed"] is True and "Unsupported parameters" in result["msg"] and option in result["msg"]
    assert snapshot(etcd) == {}


# ---- network.yml: the inventory's cluster-wide sets and policies -------------------------------------

BASELINE = [
    {"name": "allow-dns", "spec": {"order": 100, "selector": "all()", "types": ["Egress"], "egress": [
        {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}}]}},
    {"name": "deny-outside", "labels": {"baseline": "true"}, "spec": {"order": 200, "selector": "all()", "egress": [
        {"action": "Deny", "destination": {"selector": "role == 'outside'"}}]}},
]
SETS = [{"name": "outside", "labels": {"role": "outside"}, "spec": {"nets": ["192.0.2.0/24"]}}]


def _vars(policies: list[dict[str, Any]], sets: list[dict[str, Any]]) -> list[str]:
    return ["-e", json.dumps({"pycalico_global_network_policies": policies, "pycalico_global_network_sets": sets})]


def test_network_playbook_applies_the_global_policies_once(playbook, local_inventory, etcd):  # noqa: F811
    store = ResourceStore(etcd)
    network = REPO / "playbooks" / "network.yml"
    base = ["--tags", "cluster_policy", "-e", f"pycalico_python={sys.executable}", "-e", "ansible_become=false"]

    checked = playbook(network, *base, "--check", "--diff", *_vars(BASELINE, SETS), inventory=local_inventory)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert recap(checked.stdout, "127.0.0.1")["changed"] == 2  # a looped task counts once
    assert '"selector": "role == \'outside\'"' in checked.stdout  # the diff
    assert snapshot(etcd) == {}, "check mode wrote to etcd"

    real = playbook(network, *base, *_vars(BASELINE, SETS), inventory=local_inventory)
    assert real.returncode == 0, real.stdout + real.stderr
    assert recap(real.stdout, "127.0.0.1")["changed"] == 2
    assert store.get(GlobalNetworkPolicy, "allow-dns").spec["order"] == 100
    deny = store.get(GlobalNetworkPolicy, "deny-outside")
    assert deny.labels["baseline"] == "true" and deny.spec["types"] == ["Egress"]
    assert store.get(GlobalNetworkSet, "outside").labels == {"role": "outside"}

    again = playbook(network, *base, *_vars(BASELINE, SETS), inventory=local_inventory)
    assert again.returncode == 0 and recap(again.stdout, "127.0.0.1")["changed"] == 0, again.stdout

    # One removed with state=absent, the others untouched.
    dropped = [BASELINE[0], {"name": "deny-outside", "state": "absent"}]
    removed = playbook(network, *base, *_vars(dropped, SETS), inventory=local_inventory)
    assert removed.returncode == 0 and recap(removed.stdout, "127.0.0.1")["changed"] == 1, removed.stdout
    assert store.get(GlobalNetworkPolicy, "deny-outside") is None

    # A bad policy fails on its field and writes nothing.
    before = snapshot(etcd)
    bad = [{"name": "typo", "spec": {"selector": "all()", "ingress": [{"action": "Alow"}]}}]
    failed = playbook(network, *base, *_vars(bad, []), inventory=local_inventory)
    assert failed.returncode != 0
    assert "spec.ingress[0].action: invalid value 'Alow'" in failed.stdout, failed.stdout
    assert snapshot(etcd) == before
