"""CNI latency: our plugin against Debian's Go ``ptp`` + ``host-local`` in the same run.

Self-contained (root): a host network namespace with its own etcd (mutual TLS), the
datastore prepared, the plugin installed with an absolute interpreter, the fast-path
server running as its own process (as inside the agent), pods as namespaces; all
removed at the end. Run with the project's Python: ``.venv/bin/python bench/cni_latency.py``.

Measured per plugin, each invocation as a runtime makes it (fork+exec, stdin config):
- 100 sequential ADD+DEL pairs, interleaved with the reference so drift hits both;
- 100 ADDs from 8 concurrent callers (wall time, in 5 rounds taken in turn with the
  reference), then their DELs.
Both our paths are measured, each in its own phase against the reference: through the
agent socket (fast), then in-process (fallback).

Then Kubernetes mode (``policy.type: k8s``, a kubeconfig for the stand-in API server of
tests/support, pods created in it beforehand with this node's name): sequential ADD+DEL
pairs through the fast path, against the reference again (``CNI_BENCH_SKIP_K8S=1`` skips it,
``CNI_BENCH_ONLY_K8S=1`` runs it alone, as ``bench/kube.py`` does).

Last line: ``RESULT add_p50_ratio=<x> add_p99_ratio=<x> del_p50_ratio=<x> concurrent_ratio=<x>``
(fast path / reference; the in-process ratios are on the ``INPROCESS`` line before it, the
Kubernetes-mode one on the ``K8S k8s_add_p50_ratio=<x>`` line, goal <= 1.5).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.support.cni_env import DEBIAN_CNI, CniEnv, add_netns, del_netns, netns_path  # noqa: E402

PAIRS = int(os.environ.get("CNI_BENCH_PAIRS", "100"))
CONCURRENT = int(os.environ.get("CNI_BENCH_CONCURRENT", "100"))
CALLERS = 8
ROUNDS = 5
WARMUP = 5


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


class Plugin:
    def __init__(self, label: str, env: CniEnv, binary: str, conf: dict[str, Any], extra_env: dict[str, str],
                 cni_args: Any = None):
        self.cni_args = cni_args  # container id -> CNI_ARGS (Kubernetes mode)
        self.label = label
        self.env = env
        self.binary = binary
        self.stdin = json.dumps(conf).encode()
        self.extra_env = extra_env

    def call(self, command: str, cid: str, netns: str) -> float:
        env = self.env.env(command, cid, netns)
        env.pop("PYCALICO_CNI_SOCKET", None)
        env.pop("PYCALICO_CNI_NO_FAST_PATH", None)
        env.update(self.extra_env)
        if self.cni_args is not None:
            env["CNI_ARGS"] = self.cni_args(cid)
        started = time.perf_counter()
        proc = subprocess.run([self.binary], input=self.stdin, env=env, capture_output=True)
        elapsed = (time.perf_counter() - started) * 1000
        if proc.returncode != 0:
            raise RuntimeError(f"{self.label} {command} {cid}: rc={proc.returncode} {proc.stdout!r} {proc.stderr!r}")
        return elapsed


POD_MADE: Any = None  # Kubernetes mode: called with each new container id to create its pod


def make_pods(env: CniEnv, tag: str, n: int) -> list[tuple[str, str, str]]:
    out = []
    for i in range(n):
        name = f"{env.prefix}-{tag}{i}"
        add_netns(name)
        cid = os.urandom(8).hex()
        if POD_MADE is not None:
            POD_MADE(cid)
        out.append((name, netns_path(name), cid))
    return out


def drop_pods(pods: list[tuple[str, str, str]]) -> None:
    for name, _, _ in pods:
        del_netns(name)


def sequential(plugins: list[Plugin], env: CniEnv) -> dict[str, tuple[list[float], list[float]]]:
    results: dict[str, tuple[list[float], list[float]]] = {p.label: ([], []) for p in plugins}
    pods = {p.label: make_pods(env, f"s{k}", PAIRS + WARMUP) for k, p in enumerate(plugins)}
    try:
        for i in range(PAIRS + WARMUP):
            for p in plugins:
                _, path, cid = pods[p.label][i]
                add = p.call("ADD", cid, path)
                dele = p.call("DEL", cid, path)
                if i >= WARMUP:
                    results[p.label][0].append(add)
                    results[p.label][1].append(dele)
    finally:
        for p in plugins:
            drop_pods(pods[p.label])
    return results


SERVER_PID = 0


def cpu_ms(pid: int) -> float:
    """user+system CPU of a process so far (ms)."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def concurrent_round(p: Plugin, env: CniEnv, tag: str, n: int) -> tuple[float, float, float, float]:
    """n ADDs from CALLERS callers: (wall, CPU of the executables, of the agent, of etcd) in ms;
    then their DELs, untimed."""
    pods = make_pods(env, tag, n)
    try:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server = cpu_ms(SERVER_PID)
        etcd_pid = env.etcd.members[0].proc.pid if env.etcd and env.etcd.members[0].proc else 0
        etcd = cpu_ms(etcd_pid)
        started = time.perf_counter()
        with ThreadPoolExecutor(CALLERS) as pool:
            list(pool.map(lambda pod: p.call("ADD", pod[2], pod[1]), pods))
        wall = (time.perf_counter() - started) * 1000
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spawned = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) * 1000
        cpu = (spawned, cpu_ms(SERVER_PID) - server, cpu_ms(etcd_pid) - etcd)
        with ThreadPoolExecutor(CALLERS) as pool:
            list(pool.map(lambda pod: p.call("DEL", pod[2], pod[1]), pods))
        return (wall, *cpu)
    finally:
        drop_pods(pods)


def concurrent(plugins: list[Plugin], env: CniEnv) -> dict[str, float]:
    """CONCURRENT ADDs per plugin in ROUNDS rounds, the plugins taking turns round by
    round, so that load from outside the benchmark falls on all of them alike."""
    rounds = max(1, min(ROUNDS, CONCURRENT // CALLERS))
    sizes = [CONCURRENT // rounds + (1 if r < CONCURRENT % rounds else 0) for r in range(rounds)]
    totals = {p.label: [0.0, 0.0, 0.0, 0.0] for p in plugins}
    for r, size in enumerate(sizes):
        for k, p in enumerate(plugins):
            for i, value in enumerate(concurrent_round(p, env, f"c{k}r{r}x", size)):
                totals[p.label][i] += value
    for p in plugins:
        wall, spawned, agent, etcd = totals[p.label]
        print(f"  {p.label}: {CONCURRENT} ADDs by {CALLERS} callers in {wall:.0f} ms ({rounds} rounds); "
              f"CPU per ADD: executables {spawned / CONCURRENT:.1f} ms, agent {agent / CONCURRENT:.1f} ms"
              f"{'' if 'fast' in p.label else ' (idle)'}, etcd {etcd / CONCURRENT:.1f} ms")
    return {label: t[0] for label, t in totals.items()}


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench/cni_latency.py needs root (network namespaces)")
    prefix = "b" + os.urandom(3).hex()
    with CniEnv(prefix, fast=False) as env:
        server_log = env.base / "server.log"
        ready = env.base / "server.ready"
        server = subprocess.Popen(
            [sys.executable, "-m", "pycalico.cni.server", "--socket", env.socket_path, "--ready-file", str(ready),
             *(["--workers", os.environ["CNI_BENCH_WORKERS"]] if os.environ.get("CNI_BENCH_WORKERS") else [])],
            stdout=subprocess.DEVNULL, stderr=open(server_log, "w"), cwd=str(REPO))
        global SERVER_PID
        SERVER_PID = server.pid
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fast-path server did not start: {server_log.read_text()[-2000:]}")
                time.sleep(0.02)
            run(env)
            if os.environ.get("CNI_BENCH_KEEP_LOG"):
                import shutil as _sh
                _sh.copy(env.base / "cni.log", os.environ["CNI_BENCH_KEEP_LOG"])
        finally:
            server.terminate()
            server.wait(10)


def run(env: CniEnv) -> None:
    ours_conf = env.netconf("1.0.0", log_level=os.environ.get("CNI_BENCH_LOG_LEVEL", "warning"))
    ref_conf = {"cniVersion": "1.0.0", "name": "bench-ref", "type": "ptp", "ipMasq": False, "mtu": 1440,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                         "dataDir": str(env.base / "host-local")}}
    fast = Plugin("pycalico (fast path)", env, str(env.bin_dir / "pycalico"), ours_conf,
                  {"PYCALICO_CNI_SOCKET": env.socket_path})
    inproc = Plugin("pycalico (in-process)", env, str(env.bin_dir / "pycalico"), ours_conf,
                    {"PYCALICO_CNI_NO_FAST_PATH": "1"})
    ref = Plugin("ptp+host-local (Go)", env, f"{DEBIAN_CNI}/ptp", ref_conf, {})

    print(f"interpreter: {sys.executable}; launcher: {(env.bin_dir / 'pycalico').read_text().splitlines()[0]}")
    if os.environ.get("CNI_BENCH_ONLY_K8S"):  # bench/kube.py's third measure
        print(kubernetes_mode(env, ours_conf, ref))
        return
    # Each of our paths is measured in its own phase, interleaved with the reference: run
    # side by side, in-process callers would keep the server's remembered blocks stale.
    phases = [fast] if os.environ.get("CNI_BENCH_SKIP_INPROC") else [fast, inproc]
    stats: dict[str, tuple[float, ...]] = {}
    refs: dict[str, tuple[float, ...]] = {}
    print(f"{'plugin':34} {'ADD p50':>9} {'ADD p99':>9} {'DEL p50':>9} {'DEL p99':>9} {'8x100 ADD wall':>15}")
    for ours in phases:
        seq = sequential([ref, ours], env)
        conc = concurrent([ref, ours], env)
        for plugin in (ref, ours):
            adds, dels = seq[plugin.label]
            row = (statistics.median(adds), pct(adds, 99), statistics.median(dels), pct(dels, 99),
                   conc[plugin.label])
            (refs if plugin is ref else stats)[ours.label] = row
            label = f"{plugin.label}{' [' + ours.label.split('(')[1].rstrip(')') + ']' if plugin is ref else ''}"
            print(f"{label:34} {row[0]:8.1f}ms {row[1]:8.1f}ms {row[2]:8.1f}ms {row[3]:8.1f}ms {row[4]:13.0f}ms")

    def ratios(label: str) -> str:
        s, r = stats[label], refs[label]
        return (f"add_p50_ratio={s[0] / r[0]:.2f} add_p99_ratio={s[1] / r[1]:.2f} "
                f"del_p50_ratio={s[2] / r[2]:.2f} concurrent_ratio={s[4] / r[4]:.2f}")

    k8s_line = "" if os.environ.get("CNI_BENCH_SKIP_K8S") else kubernetes_mode(env, ours_conf, ref)
    print("goals: add_p50 <= 1.5, add_p99 <= 2.0, del_p50 <= 1.0, concurrent <= 1.5; k8s_add_p50 <= 1.5")
    if inproc.label in stats:
        print(f"INPROCESS {ratios(inproc.label)}")
    if k8s_line:
        print(k8s_line)
    print(f"RESULT {ratios(fast.label)}")


def kubernetes_mode(env: CniEnv, ours_conf: dict[str, Any], ref: Plugin) -> str:
    """Sequential ADD+DEL in Kubernetes mode (fast path) against the reference; the pods
    exist in the stand-in API before their ADD, as a scheduled pod does for kubelet."""
    global POD_MADE
    import contextlib
    import shutil
    import tempfile

    from tests.support.kube_apiserver import KubeApiServer

    directory = Path(tempfile.mkdtemp(prefix="pycni-bench-kube-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, directory, True)
        kube = cleanup.enter_context(KubeApiServer(directory, bookmark_interval=1.0))
        kube.create("namespaces", {"metadata": {"name": "bench", "labels": {"team": "bench"}}})
        kubeconfig = kube.write_kubeconfig(directory / "kubeconfig")
        conf = {**ours_conf, "policy": {"type": "k8s"}, "kubernetes": {"kubeconfig": str(kubeconfig)}}

        def made(cid: str) -> None:
            kube.create("pods", {"metadata": {"name": f"p-{cid}", "namespace": "bench",
                                              "labels": {"app": "bench", "pod": cid[:8]}},
                                 "spec": {"nodeName": env.nodename, "containers": [{"name": "c"}]}}, "bench")

        k8s = Plugin("pycalico (k8s, fast path)", env, str(env.bin_dir / "pycalico"), conf,
                     {"PYCALICO_CNI_SOCKET": env.socket_path},
                     cni_args=lambda cid: f"K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p-{cid}")
        POD_MADE = made
        try:
            gets_before = kube.requests[("GET", "pods")]
            seq = sequential([ref, k8s], env)
        finally:
            POD_MADE = None
        gets = kube.requests[("GET", "pods")] - gets_before
    for plugin in (ref, k8s):
        adds, dels = seq[plugin.label]
        label = f"{plugin.label}{' [k8s]' if plugin is ref else ''}"
        print(f"{label:34} {statistics.median(adds):8.1f}ms {pct(adds, 99):8.1f}ms "
              f"{statistics.median(dels):8.1f}ms {pct(dels, 99):8.1f}ms")
    print(f"  Kubernetes mode: {gets} pod GETs/lists in {PAIRS + WARMUP} ADDs (the server's watch answers the rest)")
    ratio = statistics.median(seq[k8s.label][0]) / statistics.median(seq[ref.label][0])
    return f"K8S k8s_add_p50_ratio={ratio:.2f}"


if __name__ == "__main__":
    main()
