"""pycalicoctl against a real etcd: get/apply/delete, ipam show/check/release, version, errors."""

from __future__ import annotations

import json

import pytest
import yaml

from pycalico.ctl.main import main
from pycalico.ipam import IPAM
from pycalico.model import IPPool, Node, ResourceStore


@pytest.fixture
def ctl_env(etcd_cluster, etcd, monkeypatch, tmp_path):
    pki = etcd_cluster.pki
    monkeypatch.setenv("ETCD_ENDPOINTS", ",".join(etcd_cluster.endpoints))
    monkeypatch.setenv("ETCD_CA_CERT_FILE", str(pki.ca))
    monkeypatch.setenv("ETCD_CERT_FILE", str(pki.client_cert))
    monkeypatch.setenv("ETCD_KEY_FILE", str(pki.client_key))
    monkeypatch.setenv("PYCALICO_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("PYCALICO_HEALTH_PORT", "1")  # nothing listens: the agent "is not running"
    return etcd


def test_apply_get_delete_roundtrip_yaml_and_json(ctl_env, tmp_path, capsys):
    docs = tmp_path / "res.yaml"
    docs.write_text(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-a}\n"
        "spec: {cidr: 10.60.0.0/16, vxlanMode: Always, natOutgoing: true}\n---\n"
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n"
        "spec: {peerIP: 10.0.0.254, asNumber: 65000}\n")
    assert main(["apply", "-f", str(docs)]) == 0
    assert "Successfully applied 2" in capsys.readouterr().out
    assert main(["get", "ippool", "pool-a", "-o", "json"]) == 0
    pool = json.loads(capsys.readouterr().out)
    assert pool["spec"]["vxlanMode"] == "Always" and pool["spec"]["blockSize"] == 26  # defaults filled in
    assert main(["get", "bgppeers", "-o", "yaml"]) == 0
    peers = yaml.safe_load(capsys.readouterr().out)  # a list is a BGPPeerList, as calicoctl prints it
    assert peers["kind"] == "BGPPeerList" and [p["metadata"]["name"] for p in peers["items"]] == ["tor"]
    assert main(["get", "ippools"]) == 0
    assert "10.60.0.0/16" in capsys.readouterr().out
    assert main(["create", "-f", str(docs)]) == 2  # already exists
    assert "already exists" in capsys.readouterr().err
    assert main(["delete", "bgppeer", "tor"]) == 0
    assert main(["delete", "bgppeer", "tor"]) == 4
    assert main(["delete", "bgppeer", "tor", "--skip-not-exists"]) == 0
    assert main(["get", "bgppeer", "tor"]) == 4


def test_invalid_resources_are_refused_before_any_write(ctl_env, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([
        {"kind": "IPPool", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "ok"},
         "spec": {"cidr": "10.61.0.0/16"}},
        {"kind": "IPPool", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "both"},
         "spec": {"cidr": "10.62.0.0/16", "ipipMode": "Always", "vxlanMode": "Always"}},
    ]))
    assert main(["apply", "-f", str(bad)]) == 2
    assert "ipipMode" in capsys.readouterr().err
    assert ResourceStore(ctl_env).list(IPPool) == []
    (tmp_path / "junk.yaml").write_text("kind: [unclosed\n")
    assert main(["apply", "-f", str(tmp_path / "junk.yaml")]) == 2


def test_ipam_show_check_release(ctl_env, capsys):
    store = ResourceStore(ctl_env)
    store.create(IPPool("p", {"cidr": "10.63.0.0/16"}))
    ipam = IPAM(ctl_env)
    ips = ipam.auto_assign("leaky", {"node": "n1"}, "n1", num=2)
    assert main(["ipam", "show", "--show-blocks"]) == 0
    out = capsys.readouterr().out
    assert "10.63.0.0/16" in out and "2 (0%)" in out and "n1" in out
    # no Node n1 and no workload endpoint: both addresses are leaks
    assert main(["ipam", "check"]) == 1
    assert "leaked" in capsys.readouterr().out
    ip = str(ips[0].ip)
    assert main(["ipam", "release", "--ip", ip]) == 0
    assert main(["ipam", "release", "--ip", ip]) == 4
    assert main(["ipam", "release", "--leaked"]) == 0
    capsys.readouterr()
    assert main(["ipam", "check"]) == 0
    assert "consistent" in capsys.readouterr().out
    assert main(["ipam", "release", "--ip", "not-an-ip"]) == 2


def test_delete_node_runs_calicos_removal(ctl_env, capsys):
    store = ResourceStore(ctl_env)
    store.create(IPPool("p", {"cidr": "10.64.0.0/16"}))
    store.create(Node("gone", {"bgp": {"ipv4Address": "10.0.0.9/24"}}))
    IPAM(ctl_env).auto_assign("vxlan-tunnel-addr-gone", {"node": "gone", "type": "vxlanTunnelAddress"}, "gone")
    assert main(["delete", "node", "gone"]) == 0
    assert store.get(Node, "gone") is None
    assert IPAM(ctl_env).affinities("gone") == {}


def test_version_and_node_status_without_daemons(ctl_env, capsys):
    assert main(["version"]) == 0
    assert "Client Version" in capsys.readouterr().out
    assert main(["node", "status"]) == 1
    captured = capsys.readouterr()
    assert "pycalico agent is not running." in captured.out and "BIRD is not ready" in captured.err


def test_datastore_unreachable_is_exit_3(monkeypatch, tmp_path, etcd_cluster, capsys):
    pki = etcd_cluster.pki
    monkeypatch.setenv("ETCD_ENDPOINTS", "https://127.0.0.1:1")
    monkeypatch.setenv("ETCD_CA_CERT_FILE", str(pki.ca))
    monkeypatch.setenv("ETCD_CERT_FILE", str(pki.client_cert))
    monkeypatch.setenv("ETCD_KEY_FILE", str(pki.client_key))
    assert main(["get", "ippools"]) == 3
    assert "unreachable" in capsys.readouterr().err
