"""Agent scale: 1,000 Node records and 1,000 remote blocks (VXLAN) → time until every
route, neighbour and FDB entry is in the kernel, and the agent's RSS.

Self-contained: a TLS etcd and one namespace node. The records are written
through the model (Nodes) and the IPAM block type (blocks) before the agent
starts; the clock runs from the agent's exec to the last entry seen in the
kernel, so it includes interpreter start, the etcd list and the programming.
Reference in the same run: the same 3,000 entries written by one
``ip -batch``/``bridge -batch`` into a fresh namespace (the floor for any agent).

    .venv/bin/python bench/agent_scale.py [--nodes 1000]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycalico.agent.calc import vxlan_mac  # noqa: E402
from pycalico.ipam import AllocationBlock  # noqa: E402
from pycalico.model import IPPool, Node, ResourceStore, keys  # noqa: E402
from tests.support.cluster import etcd_env, etcd_ports  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402
from tests.support.topology import Topology, nsexec  # noqa: E402

POOL = ipaddress.ip_network("10.64.0.0/10")


def remote(i: int) -> tuple[str, str, str]:
    """(node IP, block CIDR, tunnel IP) of remote node ``i``."""
    block = ipaddress.ip_network(f"{POOL.network_address + (i + 16) * 64}/26")
    node_ip = ipaddress.ip_address("172.20.0.0") + i + 1
    return str(node_ip), str(block), str(block.network_address)


def route_count(ns: str) -> int:
    return nsexec(ns, "ip", "-4", "route", "show", "proto", "80", check=False).stdout.count("dev vxlan.calico")


def counts(ns: str) -> tuple[int, int, int]:
    routes = route_count(ns)
    neigh = nsexec(ns, "ip", "-4", "neigh", "show", "dev", "vxlan.calico", "nud", "permanent",
                   check=False).stdout.count("\n")
    fdb = nsexec(ns, "bridge", "fdb", "show", "dev", "vxlan.calico", check=False).stdout.count(" permanent")
    return routes, neigh, fdb


def reference(ns: str, n: int) -> float:
    """Writes the same entries with iproute2 batches: what the kernel and ip(8) cost alone."""
    nsexec(ns, "ip", "link", "add", "vxlan.calico", "type", "vxlan", "id", "4096", "dstport", "4789", "local",
           "10.77.0.1", "dev", "eth0", "nolearning")
    nsexec(ns, "ip", "link", "set", "vxlan.calico", "up")
    ip_lines, fdb_lines = [], []
    for i in range(n):
        node_ip, block, tunnel = remote(i)
        mac = vxlan_mac(f"remote-{i}")
        ip_lines.append(f"neigh replace {tunnel} lladdr {mac} dev vxlan.calico nud permanent")
        ip_lines.append(f"route replace {block} via {tunnel} dev vxlan.calico onlink proto 80")
        fdb_lines.append(f"fdb replace {mac} dev vxlan.calico dst {node_ip} self permanent")
    started = time.monotonic()
    subprocess.run(["ip", "-n", ns, "-force", "-batch", "-"], input="\n".join(ip_lines) + "\n", text=True,
                   check=True, capture_output=True)
    subprocess.run(["ip", "netns", "exec", ns, "bridge", "-force", "-batch", "-"], input="\n".join(fdb_lines) + "\n",
                   text=True, check=True, capture_output=True)
    return time.monotonic() - started


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("-v", "--verbose", action="store_true", help="print the agent's log (its timeline)")
    args = parser.parse_args()
    n = args.nodes
    prefix = f"bs{uuid.uuid4().hex[:5]}"
    with EtcdCluster(1, prefix=prefix) as etcd:
        client = etcd.client()
        client.delete_prefix("/calico/")
        store = ResourceStore(client)
        store.create(IPPool("scale", {"cidr": str(POOL), "vxlanMode": "Always"}))
        load_started = time.monotonic()

        def load(i: int) -> None:
            node_ip, block, tunnel = remote(i)
            store.create(Node(f"remote-{i}", {"bgp": {"ipv4Address": f"{node_ip}/16"},
                                              "ipv4VXLANTunnelAddr": tunnel,
                                              "vxlanTunnelMACAddr": vxlan_mac(f"remote-{i}")}))
            blk = AllocationBlock.new(block, f"host:remote-{i}")
            client.put(keys.block_key(block), json.dumps(blk.to_json()))

        with ThreadPoolExecutor(8) as pool:  # loading only: not part of what is measured
            list(pool.map(load, range(n)))
        load_s = time.monotonic() - load_started
        env = etcd_env(etcd)
        env.update({"CALICO_NETWORKING_BACKEND": "vxlan", "PYCALICO_CNI_SERVER": "false"})
        with Topology(prefix, [2], etcd_ports=etcd_ports(etcd), base_env=env) as topo:
            host, spare = topo.hosts
            started, exec_wall = time.monotonic(), time.time()
            proc = host.start_agent()
            deadline = started + 600  # a shared 2-core machine can take minutes for 20,000 entries
            seen = (0, 0, 0)
            # The agent writes routes last: poll them alone (listing 20,000 routes costs CPU the
            # agent needs on 2 cores), then check the neighbours and FDB entries once.
            while seen != (n, n, n):
                if time.monotonic() > deadline or proc.poll() is not None:
                    print(host.log("agent")[-3000:], file=sys.stderr)
                    raise SystemExit(f"not programmed: routes/neigh/fdb = {seen} of {n}")
                if route_count(host.ns) == n:
                    done = time.monotonic()
                    seen = counts(host.ns)
                if seen != (n, n, n):
                    time.sleep(0.05)
            program_s = done - started
            rss = rss_mb(proc.pid)
            if args.verbose:
                stamp = time.strftime("%H:%M:%S", time.localtime(exec_wall)) + f",{int(exec_wall % 1 * 1000):03d}"
                print(f"agent exec at {stamp}, all routes seen {program_s:.3f} s later; its log until then:")
                print(host.log("agent")[-4000:])
            ref_s = reference(spare.ns, n)
            ref_counts = counts(spare.ns)
    print(f"loaded {n} Nodes + {n} blocks into etcd in {load_s:.1f} s")
    print(f"{'what':<44} {'seconds':>8}")
    print(f"{'agent: exec → all entries programmed':<44} {program_s:>8.3f}")
    print(f"{'reference: one ip/bridge -batch, same entries':<44} {ref_s:>8.3f}  ({ref_counts})")
    ratio = program_s / ref_s
    print(f"ratio agent/reference: {ratio:.2f}x; agent RSS {rss:.1f} MB (goal at 20,000: ratio ≤ 1.3, ≤ 150 MB)")
    print(f"RESULT program_s={program_s:.3f} program_ratio={ratio:.2f} rss_mb={rss:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
