"""The stand-in API server answers as the real one does where the controllers and the CNI
depend on it (it is a stand-in: see its docstring)."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import httpx2
import pytest

from pycalico.kube.api import Gone, KubeApi, KubeUnavailable
from tests.support.kube_apiserver import ApiError, KubeApiServer


def ns(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}}


def test_list_pages_are_read_at_one_revision(kube: KubeApiServer, kube_api: KubeApi) -> None:
    kube.create("namespaces", ns("dev"))
    for i in range(7):
        kube.create("pods", {"metadata": {"name": f"p{i}", "namespace": "dev"}})
    first = kube.list_page("pods", None, 3, "")
    kube.create("pods", {"metadata": {"name": "p9", "namespace": "dev"}})  # after the first page
    items, version = kube_api.list("pods", page_size=3)
    assert len(items) == 8 and version == str(kube.resource_version)
    second = kube.list_page("pods", None, 3, first["metadata"]["continue"])
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    rest = kube.list_page("pods", None, 0, second["metadata"]["continue"])
    assert [p["metadata"]["name"] for p in first["items"] + second["items"] + rest["items"]] == \
        [f"p{i}" for i in range(7)]  # p9 is newer than the list's revision


def test_continue_token_older_than_compaction_is_410(kube: KubeApiServer) -> None:
    kube.create("namespaces", ns("a"))
    kube.create("namespaces", ns("b"))
    page = kube.list_page("namespaces", None, 1, "")
    kube.create("namespaces", ns("c"))
    kube.compact()  # the page's revision is now older than what is kept
    with pytest.raises(ApiError) as info:
        kube.list_page("namespaces", None, 1, page["metadata"]["continue"])
    assert info.value.code == 410 and info.value.reason == "Expired"


def test_watch_streams_events_and_bookmarks_then_410_after_compaction(kube: KubeApiServer,
                                                                      kube_api: KubeApi) -> None:
    kube.create("namespaces", ns("dev"))
    _, version = kube_api.list("namespaces")
    events: list[tuple[str, str]] = []

    def watch() -> None:
        for kind, obj in kube_api.watch("namespaces", version, timeout_seconds=2):
            events.append((kind, obj["metadata"].get("name", "")))

    thread = threading.Thread(target=watch)
    thread.start()
    kube.create("namespaces", ns("qa"))
    obj = kube.get("namespaces", "qa")
    obj["metadata"]["labels"]["team"] = "x"
    kube.update("namespaces", obj)
    kube.delete("namespaces", "qa")
    thread.join(10)
    assert events[:3] == [("ADDED", "qa"), ("MODIFIED", "qa"), ("DELETED", "qa")]
    assert ("BOOKMARK", "") in events[3:]
    kube.compact()
    with pytest.raises(Gone):
        list(kube_api.watch("namespaces", version, timeout_seconds=1))


def test_404_409_and_resource_version_bumps(kube: KubeApiServer, kube_api: KubeApi) -> None:
    with pytest.raises(ApiError) as missing_ns:
        kube.create("pods", {"metadata": {"name": "p", "namespace": "nope"}})
    assert missing_ns.value.code == 404
    created = kube.create("namespaces", ns("dev"))
    with pytest.raises(ApiError) as exists:
        kube.create("namespaces", ns("dev"))
    assert exists.value.code == 409 and exists.value.reason == "AlreadyExists"
    updated = kube.update("namespaces", created)
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    with pytest.raises(ApiError) as stale:
        kube.update("namespaces", created)  # carries the old resourceVersion
    assert stale.value.code == 409 and stale.value.reason == "Conflict"
    kube.delete("namespaces", "dev")
    assert kube_api.get("namespaces", "dev") is None
    with pytest.raises(ApiError) as gone:
        kube.delete("namespaces", "dev")
    assert gone.value.code == 404


def test_defaulting_calico_relies_on(kube: KubeApiServer) -> None:
    kube.create("namespaces", ns("dev"))
    assert kube.get("namespaces", "dev")["metadata"]["labels"] == {"kubernetes.io/metadata.name": "dev"}
    pod = kube.create("pods", {"metadata": {"name": "p", "namespace": "dev"}, "spec": {}})
    assert pod["spec"]["serviceAccountName"] == "default"
    policy = kube.create("networkpolicies", {"metadata": {"name": "np", "namespace": "dev"}, "spec": {
        "podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}})
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"][0]["ports"][0]["protocol"] == "TCP"


def test_http_verbs_over_tls(kube: KubeApiServer) -> None:
    context = ssl.create_default_context(cafile=str(kube.pki.ca))
    context.load_cert_chain(str(kube.pki.client_cert), str(kube.pki.client_key))
    client = httpx2.Client(base_url=kube.url, verify=context)
    with client:
        assert client.post("/api/v1/namespaces", json=ns("dev")).status_code == 201
        assert client.post("/api/v1/namespaces/dev/pods", json={"metadata": {"name": "p"}}).status_code == 201
        patched = client.patch("/api/v1/namespaces/dev/pods/p", json={"metadata": {"labels": {"app": "a"}}},
                               headers={"Content-Type": "application/merge-patch+json"})
        assert patched.json()["metadata"]["labels"] == {"app": "a"}
        assert client.get("/api/v1/namespaces/dev/pods/q").json()["code"] == 404
        assert client.get("/apis/networking.k8s.io/v1/namespaces/dev/networkpolicies").json()["items"] == []
        assert client.get("/api/v1/pods?watch=1&sendInitialEvents=true").status_code == 400
        assert client.delete("/api/v1/namespaces/dev").status_code == 200
        assert kube.objects("pods") == []  # a namespace deletion takes its objects


def test_client_certificate_of_another_ca_is_refused(kube: KubeApiServer, tmp_path: Path) -> None:
    api = KubeApi(str(kube.write_kubeconfig(tmp_path / "rogue", kube.pki.rogue_cert, kube.pki.rogue_key)),
                  timeout=2.0)
    with pytest.raises(KubeUnavailable):
        api.list("namespaces")
    api.close()


def test_stop_and_start_on_the_same_port_keep_state(kube: KubeApiServer, kube_api: KubeApi) -> None:
    kube.create("namespaces", ns("dev"))
    port = kube.port
    kube.stop()
    with pytest.raises(KubeUnavailable):
        kube_api.list("namespaces")
    assert not kube_api.healthz()
    kube.start()
    assert kube.port == port and kube_api.healthz()
    assert [n["metadata"]["name"] for n in kube_api.list("namespaces")[0]] == ["dev"]


def test_serve_as_a_process_with_an_embedded_kubeconfig_then_stop(tmp_path: Path) -> None:
    """``python -m tests.support.kube_apiserver serve`` (the molecule scenario's): returns once
    it answers; the embedded kubeconfig (kubeasz's shape) works for the CNI's client; ``stop``
    ends the process and removes its pid file."""
    import json
    import os
    import subprocess
    import sys

    from pycalico.cni.k8s import KubeClient
    from tests.support.topology import poll

    directory = tmp_path / "api"
    repo = Path(__file__).resolve().parents[2]
    started = subprocess.run([sys.executable, "-m", "tests.support.kube_apiserver", "serve", "--dir", str(directory),
                              "--lifetime", "120"], cwd=repo, capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(started.stdout)
    pid = info["pid"]
    try:
        embedded = Path(info["embedded_kubeconfig"])
        assert embedded.stat().st_mode & 0o777 == 0o600
        assert "client-key-data" in embedded.read_text() and str(directory) not in embedded.read_text()
        client = KubeClient(str(embedded))
        try:
            assert client.get("/api/v1/namespaces/nope") is None  # a real 404 through TLS with the client cert
            assert client.get("/version")["gitVersion"].endswith("-standin")  # type: ignore[index]
        finally:
            client.close()
    finally:
        subprocess.run([sys.executable, "-m", "tests.support.kube_apiserver", "stop", "--dir", str(directory)],
                       cwd=repo, timeout=60, check=True)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    poll(gone, 10, what="the stand-in process to end")
    assert not (directory / "kube-apiserver.pid").exists()
