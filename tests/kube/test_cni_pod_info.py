"""The CNI's Kubernetes mode reads the pod through the stand-in API server over HTTPS with a
kubeconfig: labels, profiles, named ports, the address annotations, and its errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pycalico.cni.k8s import KubeClient, KubeError, KubeUnavailable, pod_info
from tests.support.kube_apiserver import KubeApiServer


def pod(name: str, ns: str, *, labels: dict[str, str] | None = None, sa: str | None = None,
        annotations: dict[str, str] | None = None) -> dict:
    spec: dict = {"containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080},
                                                             {"containerPort": 9090},
                                                             {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]}
    if sa:
        spec["serviceAccountName"] = sa
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {}, "annotations": annotations or {}},
            "spec": spec}


def test_pod_labels_profiles_and_ports(kube: KubeApiServer, kubeconfig: Path) -> None:
    kube.create("namespaces", {"metadata": {"name": "dev", "labels": {"team": "a"}}})
    kube.create("pods", pod("web-1", "dev", labels={"app": "web"}, sa="builder"), "dev")
    info = pod_info(KubeClient(str(kubeconfig)), "dev", "web-1")
    assert info.labels == {"app": "web", "projectcalico.org/namespace": "dev",
                           "projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "builder"}
    assert info.profiles == ["kns.dev", "ksa.dev.builder"]
    assert info.ports == [{"name": "http", "port": 8080, "protocol": "TCP"},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]
    assert info.ip_addrs == [] and info.ipv4_pools == []


def test_address_annotations_pod_first_then_namespace(kube: KubeApiServer, kubeconfig: Path) -> None:
    kube.create("namespaces", {"metadata": {"name": "pools", "annotations": {
        "cni.projectcalico.org/ipv4pools": '["ns-pool"]'}}})
    kube.create("pods", pod("a", "pools"), "pools")
    kube.create("pods", pod("b", "pools", annotations={"cni.projectcalico.org/ipv4pools": '["10.9.0.0/16"]'}),
                "pools")
    kube.create("pods", pod("c", "pools", annotations={"cni.projectcalico.org/ipAddrs": '["10.9.1.5"]'}), "pools")
    kube.create("pods", pod("bad", "pools", annotations={"cni.projectcalico.org/ipAddrs": "10.9.1.5"}), "pools")
    client = KubeClient(str(kubeconfig))
    assert pod_info(client, "pools", "a").ipv4_pools == ["ns-pool"]  # default serviceaccount
    assert pod_info(client, "pools", "a").profiles == ["kns.pools", "ksa.pools.default"]
    assert pod_info(client, "pools", "b").ipv4_pools == ["10.9.0.0/16"]
    assert pod_info(client, "pools", "c").ip_addrs == ["10.9.1.5"]
    with pytest.raises(KubeError, match=r"cni.projectcalico.org/ipAddrs: invalid value '10.9.1.5'.*JSON list"):
        pod_info(client, "pools", "bad")
    with pytest.raises(KubeError, match="pod pools/nope not found"):
        pod_info(client, "pools", "nope")


def test_api_away_is_try_again_later_and_inline_credentials_work(kube: KubeApiServer, kubeconfig: Path,
                                                                 tmp_path: Path) -> None:
    kube.create("namespaces", {"metadata": {"name": "dev"}})
    kube.create("pods", pod("p", "dev"), "dev")
    config = json.loads(kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    cluster["certificate-authority-data"] = base64.b64encode(Path(cluster.pop("certificate-authority"))
                                                             .read_bytes()).decode()
    user["client-certificate-data"] = base64.b64encode(Path(user.pop("client-certificate")).read_bytes()).decode()
    user["client-key-data"] = base64.b64encode(Path(user.pop("client-key")).read_bytes()).decode()
    inline = tmp_path / "inline.kubeconfig"
    inline.write_text(json.dumps(config))
    client = KubeClient(str(inline), timeout=2.0)
    assert pod_info(client, "dev", "p").name == "p"
    kube.stop()
    try:
        with pytest.raises(KubeUnavailable, match="unreachable"):
            pod_info(client, "dev", "p")
    finally:
        kube.start()
    assert pod_info(client, "dev", "p").profiles == ["kns.dev", "ksa.dev.default"]
    with pytest.raises(KubeError, match="kubeconfig .*: no context named"):
        bad = tmp_path / "bad.kubeconfig"
        bad.write_text(json.dumps({**config, "current-context": "other"}))
        KubeClient(str(bad))


def test_the_fast_path_mirror_follows_the_api_and_relists_after_410(kube: KubeApiServer, kubeconfig: Path) -> None:
    from pycalico.cni.k8s_cache import PodCache
    from tests.support.topology import poll

    kube.create("namespaces", {"metadata": {"name": "dev"}})
    here = pod("here", "dev", labels={"app": "a"})
    here["spec"]["nodeName"] = "node-1"
    elsewhere = pod("elsewhere", "dev")
    elsewhere["spec"]["nodeName"] = "node-2"
    kube.create("pods", here, "dev")
    kube.create("pods", elsewhere, "dev")
    client = KubeClient(str(kubeconfig))
    cache = PodCache(KubeClient(str(kubeconfig)), "node-1").start()
    try:
        poll(lambda: cache.pods.synced.is_set() and cache.namespaces.synced.is_set(), 10, what="mirrors listed")
        assert cache.pod("dev", "here") is not None and cache.pod("dev", "elsewhere") is None
        kube.patch("pods", "here", {"metadata": {"labels": {"app": "b"}}}, "dev")
        poll(lambda: (cache.pod("dev", "here") or {}).get("metadata", {}).get("labels") == {"app": "b"}, 10,
             what="label change through the watch")
        client.close()
        kube.stop()  # the API away: the mirror answers, no round trip needed
        try:
            assert pod_info(client, "dev", "here", cache).labels["app"] == "b"
        finally:
            kube.start()
        relists = cache.pods.relists
        kube.compact()
        late = pod("late", "dev")
        late["spec"]["nodeName"] = "node-1"
        kube.create("pods", late, "dev")
        poll(lambda: cache.pod("dev", "late") is not None, 15, what="the pod made after a compaction")
        kube.delete("pods", "here", "dev")
        poll(lambda: cache.pod("dev", "here") is None, 10, what="a deleted pod leaves the mirror")
        assert cache.pods.relists >= relists  # a 410 (if the stream was behind) re-lists; never loses a pod
    finally:
        cache.stop()
