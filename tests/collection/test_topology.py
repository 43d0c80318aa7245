"""The BGP topology of roles/cluster (tasks/rr.yml, what network.yml runs after the agents)
against the real etcd: mesh -> route reflectors -> mesh, the records at each step, the
order of the writes (etcd revisions), check mode, 0 changed on a second run, and the
external routers of the inventory pruned only when the collection made them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pycalico.model import BGPConfiguration, BGPPeer, Node, ResourceStore
from tests.collection.conftest import snapshot
from tests.collection.test_playbooks import recap

PLAY = """
- name: Topology
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Reconcile
      ansible.builtin.include_role:
        name: pycalico.network.cluster
        tasks_from: rr
"""
RR_PEER = "peer-with-route-reflectors"
LABEL = "pycalico.io/inventory-peer"


def _one(store: ResourceStore, cls: Any, name: str) -> Any:
    found = store.get(cls, name)
    assert found is not None, f"{cls.__name__} {name} is missing"
    return found


def _rv(resource: Any) -> int:
    return int(resource.resource_version)


def test_mesh_to_reflectors_and_back(playbook, tmp_path: Path, etcd_cluster, etcd):
    store = ResourceStore(etcd)
    for name, ip in (("n1", "192.0.2.1"), ("n2", "192.0.2.2"), ("n3", "192.0.2.3")):
        store.create(Node(name, {"bgp": {"ipv4Address": f"{ip}/24"}}))
    store.create(BGPPeer("by-hand", {"peerIP": "198.51.100.9", "asNumber": 65009}))
    pb = tmp_path / "topology.yml"
    pb.write_text(PLAY)
    pki = etcd_cluster.pki

    def run(*extra: str, **variables: Any):
        base = {"cluster_etcd_endpoints": ",".join(etcd_cluster.endpoints), "cluster_etcd_ca_cert_file": str(pki.ca),
                "cluster_etcd_cert_file": str(pki.client_cert), "cluster_etcd_key_file": str(pki.client_key),
                "ansible_python_interpreter": sys.executable, "cluster_node_names": ["n1", "n2", "n3"],
                "cluster_peer_hosts": ["localhost"], "pycalico_nodename": "n3"}
        proc = playbook(pb, "-e", json.dumps({**base, **variables}), *extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return recap(proc.stdout, "localhost")["changed"]

    routers = {"cluster_bgp_peers": [{"peer_ip": "198.51.100.1", "as_number": 65001}],
               "peers": [{"router_id": "198.51.100.3", "as": 65003, "scope": "node"}]}
    mesh = dict(cluster_rr_enabled=False, cluster_rr_node_names=[], **routers)

    # Full mesh with two external routers (one global, one for n3 from its kubespray-style `peers`).
    assert run(**mesh) == 2  # mesh on (the configuration created), the external peers
    assert _one(store, BGPConfiguration, "default").node_to_node_mesh is True
    assert store.get(BGPPeer, RR_PEER) is None
    ext = {p.name: p for p in store.list(BGPPeer) if (p.metadata.get("labels") or {}).get(LABEL) == "true"}
    assert sorted(ext) == ["pycalico-ext-global-198.51.100.1", "pycalico-ext-n3-198.51.100.3"]
    assert ext["pycalico-ext-n3-198.51.100.3"].spec["node"] == "n3"
    assert run(**mesh) == 0

    # n1 becomes the reflector and n3's router is taken out of the inventory.
    rr = dict(cluster_rr_enabled=True, cluster_rr_node_names=["n1"], cluster_bgp_peers=routers["cluster_bgp_peers"])
    before = snapshot(etcd)
    assert run("--check", **rr) == 4  # n1's role, the RR peer, mesh off, the n3 peer deleted
    assert snapshot(etcd) == before, "check mode wrote to etcd"
    assert run(**rr) == 4
    n1, peer, conf = _one(store, Node, "n1"), _one(store, BGPPeer, RR_PEER), _one(store, BGPConfiguration, "default")
    assert n1.rr_cluster_id == "244.0.0.1" and n1.labels == {"route-reflector": "true"}
    assert peer.peer_selector == "route-reflector == 'true'" and peer.spec["nodeSelector"] == "all()"
    assert conf.node_to_node_mesh is False
    assert _rv(n1) < _rv(peer) < _rv(conf), "the mesh went off before the reflector and its peering were in place"
    assert _one(store, Node, "n2").rr_cluster_id == ""
    assert store.get(BGPPeer, "pycalico-ext-n3-198.51.100.3") is None
    assert store.get(BGPPeer, "by-hand") is not None, "a peer the collection did not make was removed"
    assert run(**rr) == 0

    # Move the reflector role to n2: the new one is made before the old one is cleared.
    moved = dict(rr, cluster_rr_node_names=["n2"])
    assert run(**moved) == 2
    n1, n2 = _one(store, Node, "n1"), _one(store, Node, "n2")
    assert n2.rr_cluster_id == "244.0.0.1" and n1.rr_cluster_id == "" and n1.labels == {}
    assert _rv(n2) < _rv(n1)

    # Back to the mesh: the mesh on first, then the peering and the role go.
    back = dict(cluster_rr_enabled=False, cluster_rr_node_names=[], cluster_bgp_peers=[])
    assert run(**back) == 4  # mesh on, RR peer deleted, n2 cleared, the global router deleted
    conf, n2 = _one(store, BGPConfiguration, "default"), _one(store, Node, "n2")
    assert conf.node_to_node_mesh is True and store.get(BGPPeer, RR_PEER) is None
    assert n2.rr_cluster_id == "" and n2.labels == {}
    assert _rv(conf) < _rv(n2), "a reflector was cleared before the mesh was back"
    assert [p.name for p in store.list(BGPPeer)] == ["by-hand"]
    assert run(**back) == 0


def test_reflectors_not_registered_keep_the_mesh(playbook, tmp_path: Path, etcd_cluster, etcd):
    """A new reflector whose agent has not registered its node yet: the mesh stays on."""
    store = ResourceStore(etcd)
    store.create(Node("n1", {"bgp": {"ipv4Address": "192.0.2.1/24"}}))
    store.create(BGPConfiguration("default", {"nodeToNodeMeshEnabled": True}))
    pb = tmp_path / "topology.yml"
    pb.write_text(PLAY)
    pki = etcd_cluster.pki
    variables = {"cluster_etcd_endpoints": ",".join(etcd_cluster.endpoints), "cluster_etcd_ca_cert_file": str(pki.ca),
                 "cluster_etcd_cert_file": str(pki.client_cert), "cluster_etcd_key_file": str(pki.client_key),
                 "ansible_python_interpreter": sys.executable, "cluster_node_names": ["n1", "rr-new"],
                 "cluster_rr_enabled": True, "cluster_rr_node_names": ["rr-new"], "cluster_peer_hosts": []}
    proc = playbook(pb, "-e", json.dumps(variables))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _one(store, BGPConfiguration, "default").node_to_node_mesh is True
    assert store.get(BGPPeer, RR_PEER) is not None
