"""bgp_peer, bgp_configuration, node, ipam, cluster_info and cluster_identity against the real etcd:
check mode -> real -> second run, with the diff each time."""

from __future__ import annotations

from pycalico.ipam import IPAM, handle_id
from pycalico.model import (
    CLUSTER_NAME_ANNOTATION,
    BGPConfiguration,
    BGPPeer,
    ClusterInformation,
    IPPool,
    Node,
    ResourceStore,
    WorkloadEndpoint,
    wep_name,
)
from tests.collection.conftest import snapshot


def test_bgp_peer_check_real_second_and_update(run_module, etcd):
    store = ResourceStore(etcd)
    args = {"name": "peer-with-route-reflectors", "node_selector": "all()",
            "peer_selector": "route-reflector == 'true'"}
    checked = run_module("bgp_peer", check=True, **args)
    assert checked["changed"] is True and checked["diff"]["before"] == {}
    assert checked["diff"]["after"]["spec"] == {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}
    assert store.get(BGPPeer, args["name"]) is None

    assert run_module("bgp_peer", **args)["changed"] is True
    assert store.get(BGPPeer, args["name"]).peer_selector == "route-reflector == 'true'"
    second = run_module("bgp_peer", **args)
    assert second["changed"] is False and second["diff"]["before"] == second["diff"]["after"]

    # The spec is exactly the options given: a peer IP replaces the selector.
    tor = {"name": "peer-with-route-reflectors", "peer_ip": "192.0.2.1", "as_number": 64513,
           "max_restart_time": "90s", "ttl_security": 1}
    checked = run_module("bgp_peer", check=True, **tor)
    assert checked["changed"] is True
    assert checked["diff"]["before"]["spec"]["peerSelector"] == "route-reflector == 'true'"
    assert checked["diff"]["after"]["spec"] == {"peerIP": "192.0.2.1", "asNumber": 64513, "maxRestartTime": "90s",
                                                "ttlSecurity": 1}
    run_module("bgp_peer", **tor)
    assert store.get(BGPPeer, args["name"]).peer_ip == "192.0.2.1"

    gone = run_module("bgp_peer", check=True, name=args["name"], state="absent")
    assert gone["changed"] is True and gone["diff"]["after"] == {}
    assert store.get(BGPPeer, args["name"]) is not None
    assert run_module("bgp_peer", name=args["name"], state="absent")["changed"] is True
    assert run_module("bgp_peer", name=args["name"], state="absent")["changed"] is False


def test_bgp_configuration_sets_only_given_fields(run_module, etcd):
    store = ResourceStore(etcd)
    checked = run_module("bgp_configuration", check=True, as_number=64512, node_to_node_mesh=False)
    assert checked["changed"] is True
    assert checked["diff"]["after"]["spec"] == {"asNumber": 64512, "nodeToNodeMeshEnabled": False}
    assert store.get(BGPConfiguration, "default") is None
    assert run_module("bgp_configuration", as_number=64512, node_to_node_mesh=False)["changed"] is True
    assert run_module("bgp_configuration", as_number=64512, node_to_node_mesh=False)["changed"] is False

    # Mesh back on; the AS number is kept since it is not given.
    result = run_module("bgp_configuration", node_to_node_mesh=True, node_mesh_max_restart_time="120s")
    assert result["changed"] is True
    assert result["diff"]["before"]["spec"]["nodeToNodeMeshEnabled"] is False
    assert result["diff"]["after"]["spec"] == {"asNumber": 64512, "nodeToNodeMeshEnabled": True,
                                               "nodeMeshMaxRestartTime": "120s"}
    conf = store.get(BGPConfiguration, "default")
    assert conf.node_to_node_mesh is True and conf.as_number == 64512


def _node_with_workload(etcd, name: str) -> tuple[str, str]:
    """A registered node with a tunnel address, one pod endpoint and a node-specific peer."""
    store = ResourceStore(etcd)
    ipam = IPAM(etcd)
    store.create(IPPool("default-ipv4-ippool", {"cidr": "10.244.0.0/16", "ipipMode": "Always"}))
    tunnel = ipam.auto_assign(f"ipip-tunnel-addr-{name}", {"node": name, "type": "ipipTunnelAddress"}, name,
                              use="Tunnel")[0]
    store.create(Node(name, {"bgp": {"ipv4Address": "192.0.2.10/24", "ipv4IPIPTunnelAddr": str(tunnel.ip)}}))
    handle = handle_id("k8s-pod-network", "c0ffee")
    pod_ip = ipam.auto_assign(handle, {"node": name, "pod": "web"}, name)[0].ip
    store.create(WorkloadEndpoint(wep_name(name, "k8s", "web", "eth0"), {
        "node": name, "orchestrator": "k8s", "workload": "web", "endpoint": "eth0", "containerID": "c0ffee",
        "ipNetworks": [f"{pod_ip}/32"], "interfaceName": "cali0123456789a"}, namespace="default"))
    store.create(BGPPeer(f"{name}-tor", {"node": name, "peerIP": "192.0.2.1", "asNumber": 64513}))
    return str(tunnel.ip), str(pod_ip)


def test_node_absent_releases_everything_check_real_second(run_module, etcd):
    store, ipam = ResourceStore(etcd), IPAM(etcd)
    tunnel_ip, pod_ip = _node_with_workload(etcd, "worker-02")
    store.create(Node("worker-01", {"bgp": {"ipv4Address": "192.0.2.11/24"}}))
    before = snapshot(etcd)

    checked = run_module("node", check=True, name="worker-02", state="absent")
    assert checked["changed"] is True
    plan = checked["removal"]
    assert plan["node_exists"] is True
    assert plan["workload_endpoints"] == ["default/worker--02-k8s-web-eth0"]
    assert sorted(plan["ips"]) == sorted([pod_ip, tunnel_ip])
    assert len(plan["affinities"]) == 1 and plan["bgp_peers"] == ["worker-02-tor"]
    assert checked["diff"]["before"] == plan and checked["diff"]["after"] == {}
    assert snapshot(etcd) == before, "check mode wrote to etcd"

    real = run_module("node", name="worker-02", state="absent")
    assert real["changed"] is True and real["removal"] == plan
    assert store.get(Node, "worker-02") is None
    assert store.list(WorkloadEndpoint) == []
    assert store.get(BGPPeer, "worker-02-tor") is None
    assert ipam.affinities("worker-02") == {}
    assert ipam.check().allocations == 0
    assert store.get(Node, "worker-01") is not None, "another node was touched"

    second = run_module("node", name="worker-02", state="absent")
    assert second["changed"] is False and second["removal"]["node_exists"] is False


def test_node_present_adjusts_labels_and_route_reflector(run_module, etcd):
    store = ResourceStore(etcd)
    store.create(Node("master-01", {"bgp": {"ipv4Address": "192.0.2.10/24"}}))
    args = {"name": "master-01", "labels": {"route-reflector": "true"}, "route_reflector_cluster_id": "244.0.0.1"}
    checked = run_module("node", check=True, **args)
    assert checked["changed"] is True
    assert checked["diff"]["after"]["metadata"]["labels"] == {"route-reflector": "true"}
    assert checked["diff"]["after"]["spec"]["bgp"]["routeReflectorClusterID"] == "244.0.0.1"
    assert store.get(Node, "master-01").rr_cluster_id == ""
    assert run_module("node", **args)["changed"] is True
    assert store.get(Node, "master-01").rr_cluster_id == "244.0.0.1"
    assert run_module("node", **args)["changed"] is False
    bad = run_module("node", name="master-01", route_reflector_cluster_id="not-an-ip")
    assert bad["failed"] is True
    assert bad["msg"].startswith("route_reflector_cluster_id: spec.bgp.routeReflectorClusterID")


def test_ipam_reports_and_releases_leaks(run_module, etcd):
    store, ipam = ResourceStore(etcd), IPAM(etcd)
    store.create(IPPool("default-ipv4-ippool", {"cidr": "10.244.0.0/16"}))
    leaked = ipam.auto_assign("k8s-pod-network.dead", {"node": "worker-01"}, "worker-01")[0].ip

    report = run_module("ipam")
    assert report["changed"] is False and report["report"]["ok"] is False
    assert [i["ip"] for i in report["report"]["leaked"]] == [str(leaked)]
    assert report["released"] == []
    failing = run_module("ipam", fail_on_problems=True)
    assert failing["failed"] is True and "leaked" in failing["msg"]

    checked = run_module("ipam", check=True, state="released")
    assert checked["changed"] is True and checked["released"] == [str(leaked)]
    assert checked["diff"] == {"before": {"leaked": [str(leaked)], "handles_without_ips": []},
                               "after": {"leaked": [], "handles_without_ips": []}}
    assert ipam.check().allocations == 1

    assert run_module("ipam", state="released")["released"] == [str(leaked)]
    assert ipam.check().ok
    again = run_module("ipam", state="released")
    assert again["changed"] is False and again["released"] == []


def test_cluster_identity_is_claimed_once_and_guarded(run_module, etcd):
    store = ResourceStore(etcd)
    checked = run_module("cluster_identity", check=True, cluster_name="cluster1")
    assert checked["changed"] is True
    assert checked["diff"]["after"]["metadata"]["annotations"] == {CLUSTER_NAME_ANNOTATION: "cluster1"}
    assert store.get(ClusterInformation, "default") is None

    assert run_module("cluster_identity", cluster_name="cluster1")["changed"] is True
    info = store.get(ClusterInformation, "default")
    assert info.cluster_name == "cluster1" and info.cluster_guid
    second = run_module("cluster_identity", cluster_name="cluster1")
    assert second["changed"] is False and second["cluster_name"] == "cluster1"

    before = snapshot(etcd)
    other = run_module("cluster_identity", cluster_name="cluster2")
    assert other["failed"] is True
    assert "this etcd belongs to cluster 'cluster1', not 'cluster2'" in other["msg"]
    assert snapshot(etcd) == before


def test_cluster_identity_claims_an_unnamed_datastore(run_module, etcd):
    store = ResourceStore(etcd)
    store.create(ClusterInformation("default", {"clusterGUID": "abc", "datastoreReady": True}))
    result = run_module("cluster_identity", cluster_name="cluster1")
    assert result["changed"] is True
    assert result["diff"]["before"]["spec"]["clusterGUID"] == "abc"
    info = store.get(ClusterInformation, "default")
    assert info.cluster_name == "cluster1" and info.cluster_guid == "abc"


def test_cluster_info_only_reads(run_module, etcd):
    """An _info module never changes state: an empty or unclaimed datastore stays as it is."""
    empty = run_module("cluster_info", cluster_name="cluster1")
    assert (empty["changed"], empty["claimed"], empty["cluster_information"]) == (False, False, {})
    assert snapshot(etcd) == {}

    store = ResourceStore(etcd)
    store.create(ClusterInformation("default", {"clusterGUID": "abc", "datastoreReady": True}))
    before = snapshot(etcd)
    unclaimed = run_module("cluster_info", cluster_name="cluster1")
    assert (unclaimed["changed"], unclaimed["claimed"], unclaimed["cluster_name"]) == (False, False, "")
    assert snapshot(etcd) == before

    run_module("cluster_identity", cluster_name="cluster1")
    before = snapshot(etcd)
    mine = run_module("cluster_info", cluster_name="cluster1")
    assert (mine["changed"], mine["claimed"], mine["cluster_name"]) == (False, True, "cluster1")
    assert run_module("cluster_info")["cluster_name"] == "cluster1"
    other = run_module("cluster_info", cluster_name="cluster2")
    assert other["failed"] is True and "belongs to cluster 'cluster1', not 'cluster2'" in other["msg"]
    assert snapshot(etcd) == before
