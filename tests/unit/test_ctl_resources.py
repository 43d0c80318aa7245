"""pycalicoctl apply/create/replace/get/delete for every kind against the real TLS etcd:
calicoctl's files (YAML, JSON, several documents, kind: List, <Kind>List, stdin),
namespaces as calicoctl fills them in, and refusals that name the document and
the field and write nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pycalico.ctl.main import main
from pycalico.model import KINDS, ResourceStore
from tests.collection.conftest import snapshot
from tests.support.cluster import etcd_env

API = "projectcalico.org/v3"


@pytest.fixture
def ctl(etcd_cluster, etcd, monkeypatch, tmp_path):
    for key, value in etcd_env(etcd_cluster).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYCALICO_ENV_FILE", str(tmp_path / "absent.env"))
    return etcd


def doc(kind: str, name: str, spec: dict[str, Any], namespace: str | None = None, **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API, "kind": kind, "metadata": metadata, "spec": spec}


def write(tmp_path: Path, *docs: dict[str, Any], name: str = "res.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# One valid resource of each new kind, and an update of it.
SAMPLES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "NetworkPolicy": ({"selector": "app == 'db'", "ingress": [
        {"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'web'"},
         "destination": {"ports": [5432]}}]},
        {"selector": "app == 'db'", "order": 10, "ingress": [{"action": "Deny"}]}),
    "GlobalNetworkPolicy": ({"selector": "all()", "types": ["Egress"], "egress": [
        {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}}]},
        {"selector": "all()", "order": 5, "egress": [{"action": "Pass"}]}),
    "NetworkSet": ({"nets": ["198.51.100.0/24"]}, {"nets": ["198.51.100.0/24", "203.0.113.0/24"]}),
    "GlobalNetworkSet": ({"nets": ["192.0.2.0/24"]}, {"nets": ["192.0.2.0/25"]}),
    "HostEndpoint": ({"node": "worker-01", "interfaceName": "eth0", "expectedIPs": ["192.168.1.11"]},
                     {"node": "worker-01", "interfaceName": "*", "expectedIPs": ["192.168.1.11"]}),
    "Profile": ({"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]},
                {"ingress": [{"action": "Deny"}], "labelsToApply": {"net": "podman"}}),
    "Tier": ({"order": 100}, {"order": 200}),
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_policy_kind_apply_create_replace_get_delete(ctl, tmp_path, capsys, kind):
    cls = KINDS[kind]
    store = ResourceStore(ctl)
    first, second = SAMPLES[kind]
    name = "sample"
    ns = "default" if cls.NAMESPACED else None

    code, out, err = run(capsys, "create", "-f", write(tmp_path, doc(kind, name, first, labels={"team": "a"})))
    assert code == 0, err
    assert out.strip() == f"Successfully created 1 '{kind}' resource(s)"
    stored = store.get(cls, name, ns)
    assert stored is not None and stored.labels["team"] == "a"
    for field, value in first.items():
        assert stored.spec[field] == value
    uid = stored.metadata["uid"]

    # create of one that exists fails and changes nothing
    before = snapshot(ctl)
    code, _, err = run(capsys, "create", "-f", write(tmp_path, doc(kind, name, second)))
    assert code == 2 and "already exists" in err and "document 1" in err
    assert snapshot(ctl) == before

    code, out, err = run(capsys, "apply", "-f", write(tmp_path, doc(kind, name, second)))
    assert code == 0 and f"Successfully applied 1 '{kind}'" in out, err
    stored = store.get(cls, name, ns)
    assert stored.metadata["uid"] == uid, "apply recreated instead of updating"
    for field, value in second.items():
        assert stored.spec[field] == value
    assert "team" not in stored.labels, "apply keeps the file's labels, not the stored ones"

    code, out, err = run(capsys, "get", kind.lower(), name, "-o", "json")
    assert code == 0, err
    got = json.loads(out)
    assert got["kind"] == kind and got["metadata"]["name"] == name and got["spec"] == stored.spec
    code, out, _ = run(capsys, "get", cls.PLURAL, "-o", "yaml")
    listed = yaml.safe_load(out)
    assert listed["kind"] == f"{kind}List" and [i["metadata"]["name"] for i in listed["items"]] == [name]
    code, out, _ = run(capsys, "get", kind, "-o", "wide")
    assert code == 0 and out.splitlines()[0].startswith("NAME") and name in out

    # get -o yaml is apply -f input (calicoctl round trip)
    roundtrip = tmp_path / "roundtrip.yaml"
    roundtrip.write_text(yaml.safe_dump(listed))
    assert run(capsys, "apply", "-f", str(roundtrip))[0] == 0
    assert store.get(cls, name, ns).metadata["uid"] == uid

    code, _, err = run(capsys, "replace", "-f", write(tmp_path, doc(kind, "missing", first)))
    assert code == 4 and "not found" in err
    assert store.get(cls, "missing", ns) is None
    code, out, err = run(capsys, "replace", "-f", write(tmp_path, doc(kind, name, first)))
    assert code == 0 and f"Successfully replaced 1 '{kind}'" in out, err
    replaced = store.get(cls, name, ns)
    assert replaced.metadata["uid"] == uid
    assert all(replaced.spec[field] == value for field, value in first.items())
    assert not set(second) - set(first) & set(replaced.spec) - {"types"}, "replace kept fields the file left out"

    code, out, _ = run(capsys, "delete", kind, name)
    assert code == 0 and "Successfully deleted" in out
    assert store.get(cls, name, ns) is None
    assert run(capsys, "delete", kind, name)[0] == 4
    assert run(capsys, "delete", kind, name, "--skip-not-exists")[0] == 0
    assert run(capsys, "get", kind, name)[0] == 4


def test_namespaced_kinds_default_to_namespace_default(ctl, tmp_path, capsys):
    store = ResourceStore(ctl)
    from pycalico.model import NetworkPolicy, NetworkSet

    spec = {"selector": "all()", "ingress": [{"action": "Allow"}]}
    assert run(capsys, "apply", "-f", write(tmp_path, doc("NetworkPolicy", "allow", spec)))[0] == 0
    assert run(capsys, "apply", "-n", "shop", "-f", write(tmp_path, doc("NetworkPolicy", "allow", spec)))[0] == 0
    assert run(capsys, "apply", "-f", write(tmp_path, doc("NetworkSet", "nets", {"nets": ["10.9.0.0/16"]},
                                                            namespace="shop")))[0] == 0
    assert store.get(NetworkPolicy, "allow", "default") is not None
    assert store.get(NetworkPolicy, "allow", "shop") is not None
    assert store.get(NetworkSet, "nets", "shop") is not None

    # get: namespace default unless -n or -A (then with a NAMESPACE column)
    code, out, _ = run(capsys, "get", "networkpolicies")
    assert code == 0 and out.split() == ["NAME", "TIER", "allow", "default"]
    code, out, _ = run(capsys, "get", "np", "-A")
    assert out.splitlines()[0].split() == ["NAMESPACE", "NAME", "TIER"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["default", "shop"]
    code, out, _ = run(capsys, "get", "netsets", "-n", "shop", "-o", "wide")
    assert out.split() == ["NAMESPACE", "NAME", "NETS", "shop", "nets", "10.9.0.0/16"]
    assert run(capsys, "get", "networksets")[1].split() == ["NAME"]

    # calicoctl's namespace errors
    code, _, err = run(capsys, "get", "np", "allow", "-A")
    assert code == 2 and "--all-namespaces" in err
    code, _, err = run(capsys, "get", "gnp", "-n", "shop")
    assert code == 2 and "GlobalNetworkPolicy is not namespaced" in err
    code, _, err = run(capsys, "apply", "-n", "other", "-f", write(tmp_path, doc("NetworkSet", "n2", {
        "nets": ["10.8.0.0/16"]}, namespace="shop")))
    assert code == 2 and "metadata.namespace" in err
    code, _, err = run(capsys, "apply", "-f", write(tmp_path, doc("GlobalNetworkSet", "g", {
        "nets": ["10.8.0.0/16"]}, namespace="shop")))
    assert code == 2 and "metadata.namespace" in err and "not namespaced" in err

    assert run(capsys, "delete", "networkpolicy", "allow", "-n", "shop")[0] == 0
    assert store.get(NetworkPolicy, "allow", "shop") is None
    assert store.get(NetworkPolicy, "allow", "default") is not None
    assert run(capsys, "delete", "networkpolicy", "allow")[0] == 0
    assert store.get(NetworkPolicy, "allow", "default") is None


def test_lists_json_and_several_documents(ctl, tmp_path, capsys):
    store = ResourceStore(ctl)
    from pycalico.model import GlobalNetworkPolicy, GlobalNetworkSet, NetworkPolicy, Tier

    mixed = {"apiVersion": "v1", "kind": "List", "items": [
        doc("Tier", "security", {"order": 100}),
        doc("GlobalNetworkPolicy", "security.deny-ssh", {"tier": "security", "selector": "all()", "ingress": [
            {"action": "Deny", "protocol": "TCP", "destination": {"ports": [22]}}]}),
        doc("GlobalNetworkSet", "outside", {"nets": ["192.0.2.0/24"]}, labels={"role": "outside"}),
    ]}
    code, out, err = run(capsys, "apply", "-f", write(tmp_path, mixed))
    assert code == 0, err
    assert out.strip() == "Successfully applied 3 resource(s)"
    # The tier the file creates first is there for the policy that names it, as calicoctl writes in order.
    assert store.get(Tier, "security") is not None
    assert store.get(GlobalNetworkPolicy, "security.deny-ssh").spec["tier"] == "security"
    assert store.get(GlobalNetworkSet, "outside").labels == {"role": "outside"}

    typed = {"apiVersion": API, "kind": "NetworkPolicyList", "items": [
        {"metadata": {"name": "a"}, "spec": {"selector": "all()"}},
        {"metadata": {"name": "b", "namespace": "shop"}, "spec": {"selector": "all()"}}]}
    path = tmp_path / "typed.json"
    path.write_text(json.dumps(typed))
    code, out, err = run(capsys, "create", "-f", str(path))
    assert code == 0 and "Successfully created 2 'NetworkPolicy' resource(s)" in out, err
    assert store.get(NetworkPolicy, "a", "default") and store.get(NetworkPolicy, "b", "shop")
    assert store.get(NetworkPolicy, "a", "default").spec["types"] == ["Ingress"]  # Calico's defaulting
    code, out, _ = run(capsys, "get", "tiers")
    tiers = [line.split()[0] for line in out.splitlines()[1:]]
    assert tiers[0] == "security" and "default" in tiers, out  # in their order, as calicoctl lists them

    array = tmp_path / "array.json"
    array.write_text(json.dumps([doc("GlobalNetworkSet", "one", {"nets": ["10.1.0.0/16"]}),
                                 doc("GlobalNetworkSet", "two", {"nets": ["10.2.0.0/16"]})]))
    assert run(capsys, "create", "-f", str(array))[0] == 0
    assert sorted(s.name for s in store.list(GlobalNetworkSet)) == ["one", "outside", "two"]

    code, out, _ = run(capsys, "delete", "-f", str(array))
    assert code == 0 and out.count("Successfully deleted GlobalNetworkSet") == 2
    assert sorted(s.name for s in store.list(GlobalNetworkSet)) == ["outside"]

    # --skip-exists leaves the existing ones alone and creates the rest
    both = write(tmp_path, doc("GlobalNetworkSet", "outside", {"nets": ["10.3.0.0/16"]}),
                 doc("GlobalNetworkSet", "new", {"nets": ["10.4.0.0/16"]}))
    assert run(capsys, "create", "-f", both)[0] == 2
    assert store.get(GlobalNetworkSet, "new") is None
    assert run(capsys, "create", "--skip-exists", "-f", both)[0] == 0
    assert store.get(GlobalNetworkSet, "outside").spec["nets"] == ["192.0.2.0/24"]
    assert store.get(GlobalNetworkSet, "new") is not None
    twice = write(tmp_path, doc("GlobalNetworkSet", "twice", {"nets": ["10.5.0.0/16"]}),
                  doc("GlobalNetworkSet", "twice", {"nets": ["10.6.0.0/16"]}))
    code, _, err = run(capsys, "create", "-f", twice)
    assert code == 2 and "document 2 (GlobalNetworkSet twice)" in err and store.get(GlobalNetworkSet, "twice") is None
    assert run(capsys, "create", "--skip-exists", "-f", twice)[0] == 0
    assert store.get(GlobalNetworkSet, "twice").spec["nets"] == ["10.5.0.0/16"]


def test_installed_pycalicoctl_reads_stdin(etcd_cluster, etcd, tmp_path):
    env = {**os.environ, **etcd_env(etcd_cluster), "PYCALICO_ENV_FILE": str(tmp_path / "absent.env")}
    ctl = str(Path(sys.executable).parent / "pycalicoctl")
    text = yaml.safe_dump(doc("GlobalNetworkPolicy", "from-stdin", {"selector": "all()", "ingress": [
        {"action": "Allow"}]}))
    proc = subprocess.run([ctl, "apply", "-f", "-"], input=text, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    got = subprocess.run([ctl, "get", "gnp", "from-stdin", "-o", "yaml"], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert yaml.safe_load(got.stdout)["spec"]["ingress"] == [{"action": "Allow"}]


def test_replace_with_a_stale_resource_version_is_refused(ctl, tmp_path, capsys):
    store = ResourceStore(ctl)
    from pycalico.model import GlobalNetworkSet

    run(capsys, "apply", "-f", write(tmp_path, doc("GlobalNetworkSet", "s", {"nets": ["10.5.0.0/16"]})))
    old = store.get(GlobalNetworkSet, "s").resource_version
    run(capsys, "apply", "-f", write(tmp_path, doc("GlobalNetworkSet", "s", {"nets": ["10.6.0.0/16"]})))
    stale = doc("GlobalNetworkSet", "s", {"nets": ["10.7.0.0/16"]}, resourceVersion=old)
    code, _, err = run(capsys, "replace", "-f", write(tmp_path, stale))
    assert code == 1 and "changed since it was read" in err
    assert store.get(GlobalNetworkSet, "s").spec["nets"] == ["10.6.0.0/16"]


# ---- refusals: ≥ 20 invalid policies, each named by document and field, nothing written ----------

NP, GNP = "NetworkPolicy", "GlobalNetworkPolicy"


def _rule(**fields: Any) -> dict[str, Any]:
    return {"action": "Allow", **fields}


# (id, kind, spec or a whole document, the field path the error must name)
BAD_POLICIES: list[tuple[str, str, dict[str, Any], str]] = [
    ("action", NP, {"ingress": [{"action": "Accept"}]}, "spec.ingress[0].action"),
    ("action-case", GNP, {"egress": [{"action": "allow"}]}, "spec.egress[0].action"),
    ("protocol", NP, {"ingress": [_rule(protocol="TCPX")]}, "spec.ingress[0].protocol"),
    ("protocol-number", NP, {"ingress": [_rule(protocol=256)]}, "spec.ingress[0].protocol"),
    ("ports-without-protocol", NP, {"ingress": [_rule(destination={"ports": [80]})]},
     "spec.ingress[0].destination.ports"),
    ("ports-with-icmp", NP, {"ingress": [_rule(protocol="ICMP", destination={"ports": [80]})]},
     "spec.ingress[0].destination.ports"),
    ("port-range-reversed", NP, {"ingress": [_rule(protocol="TCP", destination={"ports": ["90:80"]})]},
     "spec.ingress[0].destination.ports[0]"),
    ("port-too-big", NP, {"egress": [_rule(protocol="UDP", destination={"ports": [70000]})]},
     "spec.egress[0].destination.ports[0]"),
    ("bad-cidr", NP, {"ingress": [_rule(source={"nets": ["10.0.0.0/33"]})]}, "spec.ingress[0].source.nets[0]"),
    ("notnets-everything", GNP, {"egress": [_rule(destination={"notNets": ["0.0.0.0/0"]})]},
     "spec.egress[0].destination.notNets[0]"),
    ("policy-selector", NP, {"selector": "app == "}, "spec.selector"),
    ("rule-selector", GNP, {"ingress": [_rule(source={"selector": "role in {'a'"})]},
     "spec.ingress[0].source.selector"),
    ("unknown-spec-field", NP, {"selector": "all()", "ingres": []}, "spec.ingres"),
    ("unknown-rule-field", GNP, {"ingress": [_rule(destinaton={"ports": [80]})]}, "spec.ingress[0].destinaton"),
    ("unknown-entity-field", NP, {"ingress": [_rule(source={"net": ["10.0.0.0/8"]})]}, "spec.ingress[0].source.net"),
    ("gnp-only-donottrack-on-np", NP, {"doNotTrack": True}, "spec.doNotTrack"),
    ("gnp-only-namespaceselector-on-np", NP, {"namespaceSelector": "all()"}, "spec.namespaceSelector"),
    ("prednat-with-egress", GNP, {"preDNAT": True, "applyOnForward": True, "egress": [_rule()]}, "spec.egress"),
    ("prednat-and-donottrack", GNP, {"preDNAT": True, "doNotTrack": True, "applyOnForward": True},
     "spec.preDNAT"),
    ("donottrack-without-applyonforward", GNP, {"doNotTrack": True, "ingress": [_rule()]}, "spec.applyOnForward"),
    ("bad-type", NP, {"types": ["Ingres"]}, "spec.types[0]"),
    ("repeated-type", GNP, {"types": ["Ingress", "Ingress"]}, "spec.types"),
    ("icmp-without-protocol", NP, {"ingress": [_rule(icmp={"type": 8})]}, "spec.ingress[0].icmp"),
    ("icmp-type-range", NP, {"ingress": [_rule(protocol="ICMP", icmp={"type": 255})]},
     "spec.ingress[0].icmp.type"),
    ("icmp-on-ipv6", GNP, {"ingress": [_rule(protocol="ICMP", ipVersion=6)]}, "spec.ingress[0]"),
    ("ip-version", NP, {"ingress": [_rule(ipVersion=5)]}, "spec.ingress[0].ipVersion"),
    ("order-not-a-number", GNP, {"order": "first"}, "spec.order"),
    ("missing-tier", GNP, {"tier": "nosuchtier"}, "spec.tier"),
    ("net-not-cidr-in-networkset", "NetworkSet", {"nets": ["10.0.0.300/32"]}, "spec.nets[0]"),
    ("unknown-field-globalnetworkset", "GlobalNetworkSet", {"net": ["10.0.0.0/8"]}, "spec.net"),
    ("hostendpoint-without-node", "HostEndpoint", {"interfaceName": "eth0"}, "spec.node"),
    ("profile-unknown-field", "Profile", {"labelToApply": {"a": "b"}}, "spec.labelToApply"),
    ("tier-bad-default-action", "Tier", {"order": 10, "defaultAction": "Allow"}, "spec.defaultAction"),
]

# Whole-document refusals (the envelope), any kind.
BAD_ENVELOPES: list[tuple[str, dict[str, Any], str]] = [
    ("metadata-field", {**doc(GNP, "m", {}), "metadata": {"name": "m", "lables": {"a": "b"}}}, "metadata.lables"),
    ("top-level-field", {**doc(GNP, "t", {}), "specs": {}}, "specs"),
    ("api-version", {**doc(GNP, "v", {}), "apiVersion": "projectcalico.org/v2"}, "apiVersion"),
    ("unknown-kind", {**doc(GNP, "k", {}), "kind": "GlobalNetworkPolicies"}, "kind"),
    ("bad-name", doc(NP, "Bad_Name", {}), "metadata.name"),
    ("namespace-on-global", doc(GNP, "g", {}, namespace="shop"), "metadata.namespace"),
]

# issue 13 item 2: misspelt or unknown fields of the other kinds (calicoctl decodes strictly).
BAD_OTHER_KINDS: list[tuple[str, dict[str, Any], str]] = [
    ("bgppeer", doc("BGPPeer", "p", {"peerIP": "192.0.2.1", "asNumbr": 64513}), "spec.asNumbr"),
    ("bgppeer-top", {**doc("BGPPeer", "p", {"peerIP": "192.0.2.1"}), "status": {}}, "status"),
    ("ippool", doc("IPPool", "pool", {"cidr": "10.50.0.0/16", "natOutGoing": True}), "spec.natOutGoing"),
    ("ippool-metadata", {**doc("IPPool", "pool", {"cidr": "10.50.0.0/16"}),
                         "metadata": {"name": "pool", "label": {"a": "b"}}}, "metadata.label"),
    ("bgpconfiguration", doc("BGPConfiguration", "default", {"nodeToNodeMesh": False}), "spec.nodeToNodeMesh"),
    ("bgpconfiguration-nested", doc("BGPConfiguration", "default", {"serviceClusterIPs": [{"cidrs": "10.96.0.0/12"}]}),
     "spec.serviceClusterIPs[0].cidrs"),
    ("felixconfiguration", doc("FelixConfiguration", "default", {"vxlanVni": 4200}), "spec.vxlanVni"),
    # FelixConfiguration is validated like the other kinds (issue 13 item 2): Calico's values.
    ("felixconfiguration-action", doc("FelixConfiguration", "default", {"defaultEndpointToHostAction": "Allow"}),
     "spec.defaultEndpointToHostAction"),
    ("felixconfiguration-vni", doc("FelixConfiguration", "default", {"vxlanVNI": "4096"}), "spec.vxlanVNI"),
    ("felixconfiguration-failsafe", doc("FelixConfiguration", "default", {
        "failsafeInboundHostPorts": [{"protocol": "TCP", "port": 22}, {"protocol": "tcp", "port": 68}]}),
     "spec.failsafeInboundHostPorts[1].protocol"),
    ("felixconfiguration-interval", doc("FelixConfiguration", "default", {"routeRefreshInterval": "90 seconds"}),
     "spec.routeRefreshInterval"),
    ("node", doc("Node", "n1", {"bgp": {"ipv4Adress": "192.0.2.5/24"}}), "spec.bgp.ipv4Adress"),
    ("node-orchrefs", doc("Node", "n1", {"orchRefs": [{"node": "n1", "orchestrator": "k8s"}]}),
     "spec.orchRefs[0].node"),
    ("workloadendpoint", doc("WorkloadEndpoint", "n1-k8s-pod-eth0", {"ipNetwork": ["10.0.0.1/32"]},
                             namespace="default"), "spec.ipNetwork"),
    ("clusterinformation", doc("ClusterInformation", "default", {"datastoreready": True}), "spec.datastoreready"),
]


def _assert_refused(ctl, tmp_path, capsys, bad: dict[str, Any], field: str, label: str) -> None:
    """The bad document second in a file after a valid one: refused by name, nothing written."""
    good = doc("GlobalNetworkSet", "good-one", {"nets": ["10.10.0.0/16"]})
    path = write(tmp_path, good, bad)
    before = snapshot(ctl)
    for verb in ("apply", "create"):
        code, out, err = run(capsys, verb, "-f", path)
        assert code == 2, (code, out, err)
        assert err.startswith(f"error: document 2 ({label}"), err
        assert f"): {field}" in err, err  # the model's message starts with the field's path
        assert snapshot(ctl) == before, f"{verb} wrote something although document 2 is invalid"


@pytest.mark.parametrize(("kind", "spec", "field"), [pytest.param(k, s, f, id=i) for i, k, s, f in BAD_POLICIES])
def test_invalid_policies_are_refused_with_the_field_and_nothing_written(ctl, tmp_path, capsys, kind, spec, field):
    ns = "default" if KINDS[kind].NAMESPACED else None
    who = "default/bad" if ns else "bad"
    _assert_refused(ctl, tmp_path, capsys, doc(kind, "bad", spec), field, f"{kind} {who}")


@pytest.mark.parametrize(("bad", "field"), [pytest.param(d, f, id=i) for i, d, f in BAD_ENVELOPES])
def test_invalid_envelopes_are_refused(ctl, tmp_path, capsys, bad, field):
    label = bad["kind"] if bad["kind"] in KINDS else ""
    _assert_refused(ctl, tmp_path, capsys, bad, field, label)


@pytest.mark.parametrize(("bad", "field"), [pytest.param(d, f, id=i) for i, d, f in BAD_OTHER_KINDS])
def test_unknown_fields_of_every_other_kind_are_refused(ctl, tmp_path, capsys, bad, field):
    _assert_refused(ctl, tmp_path, capsys, bad, field, bad["kind"])


def test_a_file_that_is_not_resources_is_refused(ctl, tmp_path, capsys):
    (tmp_path / "junk.yaml").write_text("kind: [unclosed\n")
    assert run(capsys, "apply", "-f", str(tmp_path / "junk.yaml"))[0] == 2
    (tmp_path / "empty.yaml").write_text("---\n")
    code, _, err = run(capsys, "apply", "-f", str(tmp_path / "empty.yaml"))
    assert code == 2 and "no resources" in err
    (tmp_path / "list.yaml").write_text(yaml.safe_dump({"kind": "List", "apiVersion": "v1", "item": []}))
    code, _, err = run(capsys, "apply", "-f", str(tmp_path / "list.yaml"))
    assert code == 2 and "item" in err and "document 1" in err
