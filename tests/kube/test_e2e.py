"""Kubernetes NetworkPolicy end to end with real traffic.

The stand-in API server (tests/support/kube_apiserver.py) holds namespaces, pods and
NetworkPolicies; pycalico-kube-controllers' manager converts them into etcd; two namespace
nodes run the real agent (VXLAN); every pod is made by the real CNI plugin in its
Kubernetes mode, so its labels, profiles and named ports come from the API. Policies
follow the scenarios of Kubernetes' own network-policy e2e suite; a pod label changed in
the API flips a connection from denied to allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.etcd import EtcdClient
from pycalico.ipam import IPAM
from pycalico.kube.api import KubeApi
from pycalico.kube.manager import Manager
from pycalico.kube.metrics import Metrics
from pycalico.model import NetworkPolicy, ResourceStore, WorkloadEndpoint, keys
from pycalico.model.store import ensure_default_tiers
from tests.agent.policy_support import T, last_written, wait_applied
from tests.support.cluster import ping_until, running_cluster
from tests.support.etcd import EtcdCluster
from tests.support.kube_apiserver import KubeApiServer
from tests.support.poll import wait_until
from tests.support.topology import Host
from tests.support.traffic import Servers, assert_reachability

pytestmark = pytest.mark.netns

POOL = "10.249.0.0/16"
TCP = [80, 81, 5000, 5001, 5002, 5432, 9000]
A, B = "e2e-a", "e2e-b"


@pytest.fixture
def manager(kubeconfig: Path, etcd: EtcdClient) -> Iterator[Manager]:
    store = ResourceStore(etcd)
    ensure_default_tiers(store)
    api = KubeApi(str(kubeconfig), timeout=2.0)
    manager = Manager(api, store, IPAM(etcd), Metrics(),
                      ("policy", "namespace", "serviceaccount", "workloadendpoint"), watch_timeout=5).start()
    assert wait_until(lambda: manager.synced, 10)
    yield manager
    manager.stop()
    api.close()


def api_pod(kube: KubeApiServer, host: Host, namespace: str, name: str, labels: dict[str, str],
            ports: list[dict[str, Any]] | None = None) -> None:
    kube.create("pods", {"metadata": {"name": name, "namespace": namespace, "labels": labels},
                         "spec": {"nodeName": host.name, "containers": [
                             {"name": "main", "image": "registry.invalid/pause", "ports": ports or []}]}},
                namespace)


def knp(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_kubernetes_policies_enforced_with_labels_from_the_api(etcd_cluster: EtcdCluster, etcd: EtcdClient,
                                                              unique: str, kube: KubeApiServer,
                                                              kubeconfig: Path, manager: Manager) -> None:
    env = {"CALICO_NETWORKING_BACKEND": "vxlan", "CALICO_IPV4POOL_CIDR": POOL, "CALICO_IPV4POOL_VXLAN": "Always"}
    with running_cluster(etcd_cluster, etcd, unique, [2], env=env, forward_ports=[kube.port]) as cl:
        cl.start(bird=False)
        h1, h2 = cl.hosts
        kube.create("namespaces", {"metadata": {"name": A, "labels": {"team": "a"}}})
        kube.create("namespaces", {"metadata": {"name": B, "labels": {"team": "b"}}})
        layout = [  # (host, namespace, pod, labels, container ports)
            (h1, A, "web", {"app": "web"}, None),
            (h2, A, "db", {"app": "db"}, None),
            (h2, A, "api", {"app": "api"}, [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]),
            (h1, A, "open", {"app": "open"}, None),
            (h2, A, "fe", {"role": "fe"}, None),
            (h1, A, "other", {"app": "other"}, None),
            (h2, A, "mon", {"role": "monitor"}, None),
            (h1, B, "bfe", {"role": "fe"}, None),
            (h2, B, "client", {"app": "client"}, None),
        ]
        pods = {}
        for host, namespace, name, labels, ports in layout:
            api_pod(kube, host, namespace, name, labels, ports)
            pods[name] = cl.add_pod_cni(host, name, namespace=namespace, kubeconfig=str(kubeconfig))
        weps = {w.spec["pod"]: w for w in cl.store.list(WorkloadEndpoint)}
        # what the CNI's Kubernetes mode wrote: the API's labels, Calico's implicit ones, both profiles
        assert weps["web"].labels["app"] == "web"
        assert weps["web"].labels["projectcalico.org/namespace"] == A
        assert weps["web"].labels["projectcalico.org/orchestrator"] == "k8s"
        assert weps["web"].spec["profiles"] == [f"kns.{A}", f"ksa.{A}.default"]
        assert weps["api"].spec["ports"] == [{"name": "http", "port": 9000, "protocol": "TCP"}]
        web, db, api, open_, fe, other, mon, bfe, client = (pods[n] for n in (
            "web", "db", "api", "open", "fe", "other", "mon", "bfe", "client"))
        revision = last_written(cl.client, keys.resource_prefix("workloadendpoints"))

        def apply(*policies: dict[str, Any]) -> None:
            """Create in the API, wait for the controllers to write them and both agents to apply them."""
            for policy in policies:
                kube.create("networkpolicies", policy, policy["metadata"]["namespace"])
            wanted = {(f"knp.default.{p['metadata']['name']}", p["metadata"]["namespace"]) for p in policies}
            assert wait_until(lambda: wanted <= {(p.name, p.namespace) for p in cl.store.list(NetworkPolicy)}, 15)
            wait_applied(cl.hosts, "networkpolicies", last_written(cl.client, keys.resource_prefix("networkpolicies")))

        with Servers(list(pods.values()), tcp=TCP, udp=[53]):
            wait_applied(cl.hosts, "weps", revision)
            ping_until(client, web.ip, 30)  # VXLAN between the nodes is up
            # no policy: everything passes (the kns. profiles allow)
            assert_reachability([T(client, web, "tcp", 80, True, "no policy"),
                                 T(other, db, "tcp", 5432, True, "no policy")])

            # 1. deny all ingress in namespace A
            apply(knp("deny-all", A, {"podSelector": {}, "policyTypes": ["Ingress"]}))
            assert_reachability([
                T(client, web, "tcp", 80, False, "deny-all: other namespace"),
                T(fe, web, "tcp", 80, False, "deny-all: same namespace"),
                T(web, client, "tcp", 80, True, "deny-all: B is not isolated"),
            ])
            # 2-4. allow from pods by label, from a namespace by label, from pods in another namespace
            apply(knp("web-from-fe", A, {"podSelector": {"matchLabels": {"app": "web"}},
                                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "fe"}}}],
                                                      "ports": [{"port": 80}]}]}),
                  knp("db-from-team-b", A, {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
                      {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}],
                       "ports": [{"protocol": "TCP", "port": 5432}]}]}),
                  knp("web-from-b-fe", A, {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
                      {"namespaceSelector": {"matchLabels": {"team": "b"}},
                       "podSelector": {"matchLabels": {"role": "fe"}}}], "ports": [{"port": 80}]}]}))
            assert_reachability([
                T(fe, web, "tcp", 80, True, "pods by label"),
                T(other, web, "tcp", 80, False, "pods by label: another label"),
                T(fe, web, "tcp", 81, False, "pods by label: another port"),
                T(client, db, "tcp", 5432, True, "namespace by label"),
                T(fe, db, "tcp", 5432, False, "namespace by label: own namespace"),
                T(bfe, web, "tcp", 80, True, "pods by label in another namespace"),
                T(client, web, "tcp", 80, False, "another namespace, label missing"),
            ])
            # 5-6. named port, endPort
            apply(knp("api-http", A, {"podSelector": {"matchLabels": {"app": "api"}},
                                      "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": "http"}]}]}),
                  knp("api-range", A, {"podSelector": {"matchLabels": {"app": "api"}}, "ingress": [
                      {"from": [{"podSelector": {}}], "ports": [{"port": 5000, "endPort": 5001}]}]}))
            assert_reachability([
                T(other, api, "tcp", 9000, True, "named port"),
                T(other, api, "tcp", 80, False, "named port: another port"),
                T(other, api, "tcp", 5000, True, "endPort: first"),
                T(other, api, "tcp", 5001, True, "endPort: last"),
                T(other, api, "tcp", 5002, False, "endPort: past the range"),
                T(client, api, "tcp", 9000, False, "podSelector {} is this namespace only"),
            ])
            # 7. ipBlock with except
            apply(knp("web-ipblock", A, {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
                {"from": [{"ipBlock": {"cidr": POOL, "except": [f"{client.ip}/32"]}}], "ports": [{"port": 81}]}]}))
            assert_reachability([
                T(bfe, web, "tcp", 81, True, "ipBlock"),
                T(client, web, "tcp", 81, False, "ipBlock except"),
            ])
            # 8-9. egress to a CIDR only (policyTypes Egress), to a pod open to all
            apply(knp("open-all", A, {"podSelector": {"matchLabels": {"app": "open"}}, "ingress": [{}]}),
                  knp("client-egress", B, {"podSelector": {"matchLabels": {"app": "client"}},
                                           "policyTypes": ["Egress"],
                                           "egress": [{"to": [{"ipBlock": {"cidr": f"{open_.ip}/32"}}],
                                                       "ports": [{"port": 80}]}]}))
            assert_reachability([
                T(client, open_, "tcp", 80, True, "egress to a CIDR"),
                T(client, open_, "tcp", 81, False, "egress: another port"),
                T(client, db, "tcp", 5432, False, "egress: another address (db allows B)"),
                T(bfe, open_, "tcp", 81, True, "ingress: [{}] allows everyone"),
            ])
            # 10-11. policies add up; a label change in the API flips a connection
            apply(knp("web-from-monitor", A, {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "monitor"}}}], "ports": [{"port": 80}]}]}),
                  knp("other-nothing", A, {"podSelector": {"matchLabels": {"app": "other"}}, "ingress": []}))
            assert_reachability([
                T(mon, web, "tcp", 80, True, "a second policy adds monitor"),
                T(fe, web, "tcp", 80, True, "the first still allows fe"),
                T(other, web, "tcp", 80, False, "neither allows other"),
                T(web, other, "tcp", 80, False, "ingress: [] allows nothing"),
            ])
            kube.patch("pods", "other", {"metadata": {"labels": {"app": "other", "role": "fe"}}}, A)
            assert wait_until(lambda: cl.store.must_get(WorkloadEndpoint, weps["other"].name, A)
                              .labels.get("role") == "fe", 15)
            wait_applied(cl.hosts, "weps", last_written(cl.client, keys.resource_prefix("workloadendpoints")))
            assert_reachability([T(other, web, "tcp", 80, True, "label changed in the API")])
            # deleting the policies restores access
            for name in ("deny-all", "web-from-fe", "web-from-b-fe", "web-ipblock", "web-from-monitor"):
                kube.delete("networkpolicies", name, A)
            assert wait_until(lambda: {p.name for p in cl.store.list(NetworkPolicy, A)}.isdisjoint(
                {"knp.default.deny-all", "knp.default.web-from-fe"}), 15)
            wait_applied(cl.hosts, "networkpolicies", cl.client.list(keys.resource_prefix("networkpolicies"))[1])
            assert_reachability([T(fe, web, "tcp", 81, True, "policies deleted")])
