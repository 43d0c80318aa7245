"""Throughput: iperf3 pod↔pod routed (BGP, no encapsulation) and over VXLAN, against
host↔host in the same run.

Self-contained: a TLS etcd, two namespace nodes with the real agent, confd and
BIRD; one pool routed by BIRD and one VXLAN pool; a pod from each pool on each
node. Each path is measured ``--rounds`` times (interleaved, ``--seconds`` each)
and the medians are compared. Goal: routed ≥ 0.95 × host.

    .venv/bin/python bench/throughput.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycalico.model import IPPool  # noqa: E402
from tests.support.cluster import Cluster, etcd_env, etcd_ports, ping_until  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402
from tests.support.topology import Topology, nsexec, poll  # noqa: E402


def iperf(client_ns: str, server_ns: str, server_ip: str, seconds: int) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", server_ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(lambda: ":5201" in nsexec(server_ns, "ss", "-Hltn").stdout, 10, what="iperf3 server")
        out = nsexec(client_ns, "iperf3", "-c", server_ip, "-t", str(seconds), "-J", timeout=seconds + 30).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    prefix = f"bt{uuid.uuid4().hex[:5]}"
    with EtcdCluster(1, prefix=prefix) as etcd:
        client = etcd.client()
        client.delete_prefix("/calico/")
        env = etcd_env(etcd)
        env["PYCALICO_CNI_SERVER"] = "false"
        with Topology(prefix, [2], etcd_ports=etcd_ports(etcd), base_env=env) as topo:
            cl = Cluster(topo, client)
            cl.store.create(IPPool("routed", {"cidr": "10.91.0.0/16"}))
            cl.store.create(IPPool("vxlan", {"cidr": "10.92.0.0/16", "vxlanMode": "Always"}))
            cl.start()
            a, b = topo.hosts
            ra, rb = cl.add_pod(a, "ra", ["routed"]), cl.add_pod(b, "rb", ["routed"])
            va, vb = cl.add_pod(a, "va", ["vxlan"], mtu=1450), cl.add_pod(b, "vb", ["vxlan"], mtu=1450)
            ping_until(ra, rb.ip, timeout=30)
            ping_until(va, vb.ip, timeout=30)
            assert "proto bird" in next(line for line in a.routes().splitlines()
                                        if line.startswith(rb.ip.rsplit(".", 1)[0]))
            paths = {"host": (a.ns, b.ns, b.addr), "routed": (ra.ns, rb.ns, rb.ip), "vxlan": (va.ns, vb.ns, vb.ip)}
            results: dict[str, list[float]] = {k: [] for k in paths}
            for _ in range(args.rounds):
                for name, (cns, sns, ip) in paths.items():
                    results[name].append(iperf(cns, sns, ip, args.seconds))
    host = statistics.median(results["host"])
    print(f"{'path':<8} {'Gbit/s (median)':>16} {'runs':>24} {'ratio to host':>14}")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:<8} {med:>16.2f} {' '.join(f'{v:.2f}' for v in values):>24} {med / host:>14.3f}")
    routed = statistics.median(results["routed"]) / host
    vxlan = statistics.median(results["vxlan"]) / host
    print(f"RESULT routed_ratio={routed:.3f} vxlan_ratio={vxlan:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
