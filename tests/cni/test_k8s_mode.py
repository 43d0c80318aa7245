"""The CNI's Kubernetes mode (``policy.type: k8s`` + ``kubernetes.kubeconfig``) against the
stand-in API server (tests/support/kube_apiserver.py: real HTTPS with client certificates),
real etcd and real network namespaces; both executable paths (server with its watch of the
node's pods, in-process with GETs)."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycalico.cni.netconf import parse_netconf
from pycalico.ipam import IPAM
from pycalico.model import IPPool, WorkloadEndpoint
from tests.cni.conftest import leftovers
from tests.support.cni_env import CniEnv
from tests.support.kube_apiserver import KubeApiServer
from tests.support.poll import wait_until

pytestmark = pytest.mark.netns

SECOND_POOL = "10.78.0.0/16"


@pytest.fixture(scope="module")
def kube(cni: CniEnv) -> Iterator[KubeApiServer]:
    """Started after the CniEnv, so it listens inside the env's host netns with etcd."""
    directory = Path(tempfile.mkdtemp(prefix="pycni-kube-"))
    server = KubeApiServer(directory, bookmark_interval=0.5).start()
    try:
        server.create("namespaces", {"metadata": {"name": "dev", "labels": {"team": "a"}}})
        server.create("namespaces", {"metadata": {"name": "pooled", "annotations": {
            "cni.projectcalico.org/ipv4pools": '["second-pool"]'}}})
        server.create("serviceaccounts", {"metadata": {"name": "builder", "namespace": "dev"}}, "dev")
        cni.store.create(IPPool("second-pool", {"cidr": SECOND_POOL, "blockSize": 26, "ipipMode": "Never",
                                                "vxlanMode": "Never", "natOutgoing": False}))
        yield server
    finally:
        server.close()
        cni.store.delete(IPPool, "second-pool")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def conf(cni: CniEnv, kube: KubeApiServer) -> dict[str, Any]:
    kubeconfig = kube.write_kubeconfig(kube.dir / "kubeconfig")
    return cni.netconf(policy={"type": "k8s"}, kubernetes={"kubeconfig": str(kubeconfig)})


@pytest.fixture
def pods(cni: CniEnv, conf: dict[str, Any]) -> Iterator[list[tuple[str, str, str, str]]]:
    """(netns name, path, container id, CNI_ARGS) per pod; DEL and netns removal afterwards."""
    made: list[tuple[str, str, str, str]] = []
    yield made
    try:
        for _, path, cid, args in made:
            cni.cni("DEL", cid, path, conf=conf, args=args)
    finally:
        for name, _, _, _ in made:
            cni.remove_pod(name)
    assert leftovers(cni) == []


def make_pod(cni: CniEnv, kube: KubeApiServer, pods: list[Any], namespace: str, *, labels: dict[str, str] | None = None,
             sa: str = "", annotations: dict[str, str] | None = None, in_api: bool = True) -> tuple[str, str, str]:
    netns, path, cid = cni.new_pod(uuid.uuid4().hex[:6])
    name = f"pod-{uuid.uuid4().hex[:8]}"
    if in_api:
        spec: dict[str, Any] = {"nodeName": cni.nodename, "containers": [
            {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}]}
        if sa:
            spec["serviceAccountName"] = sa
        kube.create("pods", {"metadata": {"name": name, "namespace": namespace, "labels": labels or {},
                                          "annotations": annotations or {}}, "spec": spec}, namespace)
    args = f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}"
    pods.append((netns, path, cid, args))
    return path, cid, args


def endpoint_of(cni: CniEnv, cid: str) -> WorkloadEndpoint:
    found = [w for w in cni.store.list(WorkloadEndpoint) if w.container_id == cid]
    assert len(found) == 1, found
    return found[0]


def pod_gets(kube: KubeApiServer) -> int:
    return kube.requests[("GET", "pods")] + kube.requests[("GET", "namespaces")]


def test_the_endpoint_carries_the_pods_labels_profiles_and_service_account(cni: CniEnv, kube: KubeApiServer,
                                                                         conf: dict[str, Any], pods) -> None:
    path, cid, args = make_pod(cni, kube, pods, "dev", labels={"app": "web", "tier": "front"}, sa="builder")
    if cni.fast:  # the server's watch has the pod before the ADD: no round trip for it
        _, cache = cni.server.runtime.kube(parse_netconf(conf, "1.0.0"), cni.nodename)
        name = args.split("K8S_POD_NAME=")[1]
        # the pod and its namespace in the server's watches (each kind has its own stream)
        assert wait_until(lambda: cache.pod("dev", name) is not None and cache.namespace("dev") is not None, 10)
    before = pod_gets(kube)
    out = cni.cni("ADD", cid, path, conf=conf, args=args)
    assert out.code == 0, out
    wep = endpoint_of(cni, cid)
    assert wep.metadata.get("labels") == {
        "app": "web", "tier": "front", "projectcalico.org/namespace": "dev",
        "projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "builder"}
    assert wep.spec["profiles"] == ["kns.dev", "ksa.dev.builder"]
    assert wep.spec["serviceAccountName"] == "builder"
    assert wep.spec["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert wep.spec["ipNetworks"] == [out.json["ips"][0]["address"]]
    if cni.fast:
        assert pod_gets(kube) == before  # from the watch
    else:
        assert pod_gets(kube) > before  # the in-process plugin GETs the pod


def test_fixed_address_from_ipaddrs_must_be_in_a_pool_and_free(cni: CniEnv, kube: KubeApiServer,
                                                              conf: dict[str, Any], pods) -> None:
    fixed = f"10.78.3.{10 + (1 if cni.fast else 2)}"
    path, cid, args = make_pod(cni, kube, pods, "dev",
                               annotations={"cni.projectcalico.org/ipAddrs": json.dumps([fixed])})
    out = cni.cni("ADD", cid, path, conf=conf, args=args)
    assert out.code == 0, out
    assert out.json["ips"][0]["address"] == f"{fixed}/32"
    assert endpoint_of(cni, cid).spec["ipNetworks"] == [f"{fixed}/32"]
    assert [str(ip) for ip in IPAM(cni.client).ips_by_handle(f"k8s-pod-network.{cid}")] == [fixed]

    clean = leftovers(cni)
    path2, cid2, args2 = make_pod(cni, kube, pods, "dev",
                                  annotations={"cni.projectcalico.org/ipAddrs": json.dumps([fixed])})
    taken = cni.cni("ADD", cid2, path2, conf=conf, args=args2)
    assert taken.code == 103, taken
    assert fixed in taken.json["msg"] and "already assigned" in taken.json["msg"]
    assert leftovers(cni) == clean  # nothing of the refused pod, the first one intact

    path3, cid3, args3 = make_pod(cni, kube, pods, "dev",
                                  annotations={"cni.projectcalico.org/ipAddrs": '["192.0.2.7"]'})
    outside = cni.cni("ADD", cid3, path3, conf=conf, args=args3)
    assert outside.code == 103, outside
    assert "192.0.2.7 is not in any IP pool" in outside.json["msg"]
    assert leftovers(cni) == clean

    path4, cid4, args4 = make_pod(cni, kube, pods, "dev",
                                  annotations={"cni.projectcalico.org/ipAddrs": '["not-an-ip"]'})
    bad = cni.cni("ADD", cid4, path4, conf=conf, args=args4)
    assert bad.code == 7, bad
    assert "cni.projectcalico.org/ipAddrs" in bad.json["msg"] and "not-an-ip" in bad.json["msg"]


def test_ipv4pools_from_the_namespace_by_name_and_from_the_pod_by_cidr(cni: CniEnv, kube: KubeApiServer,
                                                                       conf: dict[str, Any], pods) -> None:
    import ipaddress

    path, cid, args = make_pod(cni, kube, pods, "pooled")
    out = cni.cni("ADD", cid, path, conf=conf, args=args)
    assert out.code == 0, out
    assert ipaddress.ip_interface(out.json["ips"][0]["address"]).ip in ipaddress.ip_network(SECOND_POOL)
    default_pool = cni.store.get(IPPool, "default-ipv4-ippool")
    assert default_pool is not None
    path, cid, args = make_pod(cni, kube, pods, "pooled", annotations={
        "cni.projectcalico.org/ipv4pools": json.dumps([default_pool.cidr])})  # the pod's wins
    out = cni.cni("ADD", cid, path, conf=conf, args=args)
    assert out.code == 0, out
    assert ipaddress.ip_interface(out.json["ips"][0]["address"]).ip in ipaddress.ip_network(default_pool.cidr)


def test_api_unreachable_is_try_again_later_and_no_pod_without_labels(cni: CniEnv, kube: KubeApiServer,
                                                                      conf: dict[str, Any], pods) -> None:
    clean = leftovers(cni)
    # a pod the server's watch has never seen: both paths must ask the API
    path, cid, args = make_pod(cni, kube, pods, "dev", in_api=False)
    kube.stop()
    try:
        out = cni.cni("ADD", cid, path, conf=conf, args=args)
    finally:
        kube.start()
    assert out.code == 11, out
    assert "Kubernetes API unreachable" in out.json["msg"]
    assert leftovers(cni) == clean  # no veth, no address, no endpoint without labels
    missing = cni.cni("ADD", cid, path, conf=conf, args=args)  # the API is back; the pod does not exist
    assert missing.code != 0 and "not found in the Kubernetes API" in missing.json["msg"]
    assert leftovers(cni) == clean


def test_a_new_sandbox_of_a_pod_takes_its_fixed_address_over(cni: CniEnv, kube: KubeApiServer,
                                                              conf: dict[str, Any], pods) -> None:
    fixed = f"10.78.4.{20 + (1 if cni.fast else 2)}"
    path, cid, args = make_pod(cni, kube, pods, "dev",
                               annotations={"cni.projectcalico.org/ipAddrs": json.dumps([fixed])})
    first = cni.cni("ADD", cid, path, conf=conf, args=args)
    assert first.code == 0, first
    netns2, path2, cid2 = cni.new_pod(uuid.uuid4().hex[:6])  # kubelet's new sandbox of the same pod
    pods.append((netns2, path2, cid2, args))
    second = cni.cni("ADD", cid2, path2, conf=conf, args=args)
    assert second.code == 0, second
    assert second.json["ips"][0]["address"] == f"{fixed}/32"
    assert endpoint_of(cni, cid2).spec["ipNetworks"] == [f"{fixed}/32"]
    assert [str(ip) for ip in IPAM(cni.client).ips_by_handle(f"k8s-pod-network.{cid2}")] == [fixed]
    assert IPAM(cni.client).ips_by_handle(f"k8s-pod-network.{cid}") == []
