"""Kubernetes at scale: NetworkPolicy sync into etcd, one update → enforced on a node.

Self-contained: a TLS etcd, the stand-in API server (``tests/support/kube_apiserver.py``:
no registry this machine reaches carries kube-apiserver; it speaks the real list/watch
protocol over HTTPS with client certificates), the real ``pycalico-kube-controllers``
process, and one namespace node running the real agent with a local pod.

(a) 200 namespaces + 1,000 NetworkPolicies created in the API → every ``kns.`` profile and
    ``knp.default.`` policy in etcd (counted with keys-only reads), timed from the first
    create: ``knp_sync_s``. The controllers run and are synced before the first create.
(b) one NetworkPolicy update (its port) → the converted rule in the node's iptables,
    through API → controllers → etcd → agent: p50/p99 over 20 updates.
(c) ``k8s_add_p50_ratio``: a Kubernetes-mode CNI ADD (fast path, the pod's labels from the
    agent's watch) against Go's ptp + host-local: ``bench/cni_latency.py``'s Kubernetes phase
    run alone (``CNI_BENCH_ONLY_K8S=1``).

    .venv/bin/python bench/kube.py [--namespaces 200] [--policies 1000] [--updates 20]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycalico.model import IPPool, NetworkPolicy, Profile, ResourceStore, keys  # noqa: E402
from tests.support.cluster import Cluster, etcd_env, etcd_ports  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402
from tests.support.kube_apiserver import KubeApiServer  # noqa: E402
from tests.support.topology import Topology, nsexec, poll  # noqa: E402

POOL = "10.97.0.0/16"
ROOT = Path(__file__).resolve().parents[1]


def knp(name: str, namespace: str, port: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"podSelector": {"matchLabels": {"app": name}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}},
                                           {"namespaceSelector": {"matchLabels": {"team": "a"}}}],
                                  "ports": [{"protocol": "TCP", "port": port}]}]}}


def count(client: Any, prefix: str, name_prefix: str) -> int:
    return sum(1 for key in client.keys(prefix) if key.rsplit("/", 1)[-1].startswith(name_prefix))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_controllers(kubeconfig: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = {**os.environ, **env, "KUBECONFIG": str(kubeconfig), "METRICS_PORT": "0",
            "LEADER_ELECTION_ID": f"bench-{uuid.uuid4().hex[:6]}", "RECONCILER_PERIOD": "10m"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "pycalico.kube.main"], env=full, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)


def k8s_add_ratio() -> str:
    """The Kubernetes-mode phase of bench/cni_latency.py alone (its own etcd, stand-in API,
    fast-path server and Go reference in the same run)."""
    bench = ROOT / "bench" / "cni_latency.py"
    proc = subprocess.run([sys.executable, str(bench)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "CNI_BENCH_ONLY_K8S": "1"})
    found = re.search(r"k8s_add_p50_ratio=([0-9.]+)", proc.stdout)
    if proc.returncode != 0 or found is None:
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit("bench/cni_latency.py (Kubernetes mode) failed")
    return found.group(1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=20)
    args = parser.parse_args()
    prefix = f"bk{uuid.uuid4().hex[:5]}"
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    controllers: subprocess.Popen[bytes] | None = None
    try:
        with EtcdCluster(1, prefix=prefix) as etcd, KubeApiServer(work / "kube", bookmark_interval=1.0) as kube:
            client = etcd.client()
            client.delete_prefix("/calico/")
            store = ResourceStore(client)
            env = etcd_env(etcd)
            kubeconfig = kube.write_kubeconfig(work / "kubeconfig")
            controllers = start_controllers(kubeconfig, env, work / "controllers.log")
            # synced: a namespace made now reaches etcd as its profile
            kube.create("namespaces", {"metadata": {"name": "bench-probe"}})
            poll(lambda: store.get(Profile, "kns.bench-probe") is not None, 60, what="controllers synced")

            # (a) 200 namespaces + 1,000 policies → etcd
            policy_prefix = keys.resource_prefix(NetworkPolicy.PLURAL)
            profile_prefix = keys.resource_prefix(Profile.PLURAL)
            started = time.monotonic()
            for n in range(args.namespaces):
                kube.create("namespaces", {"metadata": {"name": f"ns{n}", "labels": {"team": "ab"[n % 2]}}})
            for i in range(args.policies):
                kube.create("networkpolicies", knp(f"web{i}", f"ns{i % args.namespaces}", 8000 + i % 1000))
            created_s = time.monotonic() - started
            deadline = started + 300
            while (count(client, policy_prefix, "knp.default.web") < args.policies
                   or count(client, profile_prefix, "kns.ns") < args.namespaces):
                if time.monotonic() > deadline or controllers.poll() is not None:
                    print((work / "controllers.log").read_text()[-3000:], file=sys.stderr)
                    raise SystemExit("policies never all reached etcd")
                time.sleep(0.02)
            sync_s = time.monotonic() - started

            # (b) one update → enforced on the node
            env.update({"CALICO_NETWORKING_BACKEND": "vxlan", "CALICO_IPV4POOL_CIDR": POOL,
                        "CALICO_IPV4POOL_VXLAN": "Always", "PYCALICO_CNI_SERVER": "false"})
            store.create(IPPool("bench-kube", {"cidr": POOL, "vxlanMode": "Always"}))
            with Topology(prefix, [1], etcd_ports=etcd_ports(etcd), base_env=env) as topo:
                [host] = topo.hosts
                host.start_agent()
                poll(lambda: (host.state_dir / "nodename").exists(), 60, what="agent registered")
                cluster = Cluster(topo, client)
                cluster.add_pod(host, "web0", namespace="ns0", labels={
                    "app": "web0", "projectcalico.org/orchestrator": "k8s", "projectcalico.org/namespace": "ns0"})

                def enforced(port: int) -> bool:
                    save = nsexec(host.ns, "iptables-save", "-t", "filter").stdout
                    return f"--dport {port} " in save.replace("--dports", "--dport").replace(
                        "--destination-ports", "--dport")

                poll(lambda: enforced(8000), 120, what="the first policy enforced on the node")
                latencies = []
                for k in range(args.updates):
                    port = 20000 + k
                    t = time.monotonic()
                    kube.update("networkpolicies", {**knp("web0", "ns0", port)})
                    while not enforced(port):
                        if time.monotonic() - t > 30:
                            print(host.log("agent")[-3000:], file=sys.stderr)
                            raise SystemExit(f"update to port {port} never enforced")
                        time.sleep(0.005)
                    latencies.append((time.monotonic() - t) * 1000)
    finally:
        if controllers is not None:
            controllers.terminate()
            try:
                controllers.wait(10)
            except subprocess.TimeoutExpired:
                controllers.kill()
        shutil.rmtree(work, ignore_errors=True)
    ratio = k8s_add_ratio()
    print(f"{'what':<62} {'value':>10}")
    made = f"(a) API create of {args.namespaces} namespaces + {args.policies} policies (s)"
    print(f"{made:<62} {created_s:>10.3f}")
    print(f"{'    first create → every profile and policy in etcd (s)':<62} {sync_s:>10.3f}")
    print(f"{'(b) NetworkPolicy update → enforced on the node p50 / p99 (ms)':<62} "
          f"{statistics.median(latencies):>5.1f} / {pct(latencies, 0.99):.1f}")
    print(f"{'(c) Kubernetes-mode ADD / Go ptp+host-local, p50':<62} {ratio:>10}")
    print(f"RESULT knp_sync_s={sync_s:.2f} knp_update_p50_ms={statistics.median(latencies):.1f} "
          f"knp_update_p99_ms={pct(latencies, 0.99):.1f} k8s_add_p50_ratio={ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
