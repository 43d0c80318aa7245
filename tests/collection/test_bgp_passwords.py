"""BGP passwords through the collection: the inventory's router passwords become secrets on the
nodes that peer with them (the bgp role) and secretKeyRefs in etcd (the cluster role); no
password reaches etcd, a module's arguments or the output."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

from pycalico.model import BGPConfiguration, BGPPeer, Node, ResourceStore
from tests.collection.conftest import snapshot
from tests.collection.test_playbooks import recap
from tests.collection.test_topology import PLAY as CLUSTER_PLAY

SECRETS_PLAY = """
- name: Secrets
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Install
      ansible.builtin.include_role:
        name: pycalico.network.bgp
        tasks_from: secrets
      vars:
        bgp_secrets: "{{ peers_in | pycalico.network.bgp_secrets(nodename, mesh_file) }}"
"""

SECRET = "tor-s3cret-value"
MESH = "mesh-s3cret-value"


def test_router_passwords_become_secret_references(playbook, tmp_path: Path, etcd_cluster, etcd):
    store = ResourceStore(etcd)
    store.create(Node("n3", {"bgp": {"ipv4Address": "192.0.2.3/24"}}))
    password_file = tmp_path / "tor.pw"
    password_file.write_text(SECRET + "\n")
    pb = tmp_path / "topology.yml"
    pb.write_text(CLUSTER_PLAY)
    pki = etcd_cluster.pki
    variables: dict[str, Any] = {
        "cluster_etcd_endpoints": ",".join(etcd_cluster.endpoints), "cluster_etcd_ca_cert_file": str(pki.ca),
        "cluster_etcd_cert_file": str(pki.client_cert), "cluster_etcd_key_file": str(pki.client_key),
        "ansible_python_interpreter": sys.executable, "cluster_node_names": ["n3"], "cluster_rr_enabled": False,
        "cluster_rr_node_names": [], "cluster_peer_hosts": ["localhost"], "pycalico_nodename": "n3",
        "cluster_bgp_peers": [{"peer_ip": "198.51.100.1", "as_number": 65001, "password_file": str(password_file)}],
        "peers": [{"router_id": "198.51.100.3", "as": 65003, "scope": "node", "password": SECRET}]}
    proc = playbook(pb, "-v", "-e", json.dumps(variables))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recap(proc.stdout, "localhost")["changed"] == 2  # the mesh on (configuration created), the peers
    assert SECRET not in proc.stdout + proc.stderr
    peers = {p.name: p for p in store.list(BGPPeer)}
    assert peers["pycalico-ext-global-198.51.100.1"].spec["password"] == {
        "secretKeyRef": {"name": "pycalico-ext-global-198.51.100.1", "key": "password"}}
    assert peers["pycalico-ext-n3-198.51.100.3"].spec["password"] == {
        "secretKeyRef": {"name": "pycalico-ext-n3-198.51.100.3", "key": "password"}}
    assert SECRET not in json.dumps(snapshot(etcd)), "a password reached etcd"


def test_mesh_password_is_set_and_taken_away(etcd_cluster, etcd, run_module):
    store = ResourceStore(etcd)
    result = run_module("bgp_configuration", node_mesh_password_secret="pycalico-mesh")
    assert result["changed"] is True
    assert store.get(BGPConfiguration, "default").spec["nodeMeshPassword"] == {
        "secretKeyRef": {"name": "pycalico-mesh", "key": "password"}}
    assert run_module("bgp_configuration", node_mesh_password_secret="pycalico-mesh")["changed"] is False
    run_module("bgp_configuration", as_number=64513)
    assert "nodeMeshPassword" in store.get(BGPConfiguration, "default").spec  # not given: kept
    assert run_module("bgp_configuration", node_mesh_password_secret="")["changed"] is True
    assert "nodeMeshPassword" not in store.get(BGPConfiguration, "default").spec


def test_a_password_given_to_the_module_is_refused(etcd_cluster, etcd, run_module):
    result = run_module("bgp_peers", peers=[{"peer_ip": "198.51.100.1", "as_number": 65001,
                                            "password": SECRET}])
    assert result.get("failed") and "peers[0].password" in result["msg"] and SECRET not in json.dumps(result)
    assert ResourceStore(etcd).list(BGPPeer) == []


def test_secrets_installed_where_they_peer_0600_stale_ones_removed(playbook, tmp_path: Path):
    pb = tmp_path / "secrets.yml"
    pb.write_text(SECRETS_PLAY)
    directory = tmp_path / "bgp-secrets"
    (directory / "pycalico-ext-global-203.0.113.9").mkdir(parents=True)  # a router no longer in the inventory
    mesh_file, tor_file = tmp_path / "mesh.pw", tmp_path / "tor.pw"
    mesh_file.write_text(MESH + "\n")
    tor_file.write_text(SECRET)
    peers = [{"peer_ip": "198.51.100.1", "as_number": 65001, "password_file": str(tor_file)},
             {"peer_ip": "198.51.100.3", "as_number": 65003, "node": "n3", "password": "only-for-n3"},
             {"peer_ip": "198.51.100.4", "as_number": 65004}]
    args = ["-e", json.dumps({"peers_in": peers, "nodename": "n1", "mesh_file": str(mesh_file),
                              "bgp_secrets_dir": str(directory), "ansible_python_interpreter": sys.executable}),
            "--diff"]
    first = playbook(pb, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert MESH not in first.stdout and SECRET not in first.stdout
    assert sorted(p.name for p in directory.iterdir()) == ["pycalico-ext-global-198.51.100.1", "pycalico-mesh"]
    mesh = directory / "pycalico-mesh" / "password"
    assert mesh.read_text() == MESH + "\n"  # the file as it is; confd drops the one trailing newline
    assert (directory / "pycalico-ext-global-198.51.100.1" / "password").read_text() == SECRET
    assert stat.S_IMODE(mesh.stat().st_mode) == 0o600 and stat.S_IMODE(directory.stat().st_mode) == 0o700
    second = playbook(pb, *args)
    assert second.returncode == 0 and recap(second.stdout, "localhost")["changed"] == 0, second.stdout
    checked = playbook(pb, *args, "--check")
    assert checked.returncode == 0 and recap(checked.stdout, "localhost")["changed"] == 0, checked.stdout
