"""IPAM throughput on one host (1 and 8 concurrent callers) and the import cost of
the modules the CNI path needs.

Self-contained: starts its own etcd with TLS, removes it at the end. Run with the
project's Python: ``.venv/bin/python bench/ipam.py``.
Last line: ``RESULT ipam_assign_per_s=<n> ipam_assign_per_s_8=<n> cni_import_ms=<n>``.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from pycalico.ipam import IPAM  # noqa: E402
from pycalico.model import IPPool, ResourceStore  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402

ASSIGNS = 300


def assign_rate(ipam: IPAM, callers: int, prefix: str) -> float:
    per_caller = ASSIGNS // callers
    errors: list[BaseException] = []

    def run(c: int) -> None:
        try:
            for i in range(per_caller):
                ipam.auto_assign(f"{prefix}.{c}-{i}", {"node": "bench"}, "bench")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(callers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return per_caller * callers / elapsed


def cni_import_ms() -> float:
    modules = ["pycalico.datastore.etcd", "pycalico.model", "pycalico.ipam"]
    if importlib.util.find_spec("pycalico.cni.launcher") is not None:
        modules.insert(0, "pycalico.cni.launcher")
    code = ("import time; t = time.perf_counter(); "
            + "; ".join(f"import {m}" for m in modules)
            + "; print((time.perf_counter() - t) * 1000)")
    runs = []
    for _ in range(7):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd="/", env={"PYTHONPATH": str(REPO / "src")})
        runs.append(float(out.stdout.strip()))
    print(f"imports of {', '.join(modules)}: min {min(runs):.1f} ms, median {statistics.median(runs):.1f} ms")
    return min(runs)


def main() -> None:
    with EtcdCluster(1, prefix="pcbench") as cluster:
        client = cluster.client(timeout=10)
        ResourceStore(client).create(IPPool("bench", {"cidr": "10.200.0.0/16", "blockSize": 26}))
        ipam = IPAM(client)
        ipam.auto_assign("warmup.0", {}, "bench")
        one = assign_rate(ipam, 1, "one")
        print(f"1 caller:  {one:.0f} assigns/s")
        eight = assign_rate(ipam, 8, "eight")
        print(f"8 callers: {eight:.0f} assigns/s (one host: callers serialise on the host lock, as in Calico)")
    imports = cni_import_ms()
    print(f"RESULT ipam_assign_per_s={one:.0f} ipam_assign_per_s_8={eight:.0f} cni_import_ms={imports:.0f}")


if __name__ == "__main__":
    main()
