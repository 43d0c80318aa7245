"""Convergence: a new block on one node → its route present on every peer.

Self-contained: starts a TLS etcd, three namespace nodes with the real agent
(and confd + BIRD for the BGP run), then claims ``--trials`` new blocks on
node 1 through the real IPAM (pool blockSize 30: four addresses claim a new
block) and timestamps (from the start of the claim) the route's arrival on each peer with ``ip monitor
route`` running in the peer's namespace. Reported per mode: p50/p99 of the
slowest peer per trial, side by side with the issue's goals.

    .venv/bin/python bench/convergence.py [--trials 20]
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycalico.bgp import config as bgpconfig  # noqa: E402
from pycalico.ipam import IPAM, IpamConfig  # noqa: E402
from pycalico.model import IPPool, Node, ResourceStore  # noqa: E402
from tests.support.cluster import etcd_env, etcd_ports  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402
from tests.support.topology import Host, Topology, poll  # noqa: E402

GOALS = {"bgp": 1.0, "vxlan": 0.2}


class RouteWatcher:
    """``ip monitor route`` in a namespace; remembers when each destination first appeared."""

    def __init__(self, ns: str) -> None:
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(["ip", "-n", ns, "monitor", "route"], stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            if line.startswith("Deleted"):
                continue
            words = line.split()
            if not words:
                continue
            dst = words[1] if words[0] in ("blackhole", "unreachable") else words[0]
            with self.cond:
                self.seen.setdefault(dst, now)
                self.cond.notify_all()

    def wait_for(self, dst: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while dst not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"route {dst} did not appear within {timeout}s")
                self.cond.wait(left)
            return self.seen[dst]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def vxlan_routes(host: Host, count: int) -> bool:
    return host.routes().count("dev vxlan.calico") == count


def established(host: Host, peers: int) -> bool:
    out = host.ctl("node", "status", check=False).stdout
    return out.count("Established") == peers


def run_mode(etcd: EtcdCluster, mode: str, trials: int, prefix: str) -> list[float]:
    client = etcd.client()
    client.delete_prefix("/calico/")
    store = ResourceStore(client)
    ipam = IPAM(client)
    ipam.set_config(IpamConfig(max_blocks_per_host=10000))  # every trial claims a new block on node 1
    env = etcd_env(etcd)
    env["CALICO_NETWORKING_BACKEND"] = "bird" if mode == "bgp" else "vxlan"
    env["PYCALICO_CNI_SERVER"] = "false"
    samples: list[float] = []
    with Topology(prefix, [3], etcd_ports=etcd_ports(etcd), base_env=env) as topo:
        store.create(IPPool("bench", {"cidr": "10.90.0.0/16", "blockSize": 30,
                                      "vxlanMode": "Always" if mode == "vxlan" else "Never"}))
        for h in topo.hosts:
            h.start_agent()
        for h in topo.hosts:
            poll((h.state_dir / "nodename").exists, 30, what=f"{h.name} registered")
        if mode == "bgp":
            for h in topo.hosts:
                h.start_confd()
            for h in topo.hosts:
                h.start_bird()
            for h in topo.hosts:
                poll(functools.partial(established, h, 2), 30, what=f"{h.name} BGP sessions")
        else:
            for h in topo.hosts:  # every agent has its VXLAN device and peers
                poll(functools.partial(vxlan_routes, h, 2), 30, what=f"{h.name} VXLAN routes")
        source, peers = topo.hosts[0], topo.hosts[1:]
        watchers = [RouteWatcher(p.ns) for p in peers]
        try:
            time.sleep(0.2)  # let `ip monitor` subscribe before the first trial
            i = 0
            while len(samples) < trials:
                i += 1
                known = peers[0].routes()
                # the clock starts before the claim: the block's affinity is written part-way through it
                started = time.monotonic()
                ips = ipam.auto_assign(f"bench-{uuid.uuid4().hex[:8]}-{i}", {"node": source.name}, source.name,
                                       num=4)
                fresh = {str(ipaddress.ip_interface(str(ip)).network) for ip in ips} - {
                    line.split()[0] for line in known.splitlines() if line}
                if not fresh:
                    continue  # every address fitted in a block the peers already route
                block = sorted(fresh)[0]
                try:
                    arrivals = [w.wait_for(block, 30) for w in watchers]
                except TimeoutError:
                    for h in topo.hosts:
                        print(f"== {h.name}\n{h.routes()}\n{h.log('agent')[-1500:]}\n{h.log('confd')[-1500:]}"
                              f"\n{h.log('bird')[-1500:]}", file=sys.stderr)
                    raise
                samples.append(max(arrivals) - started)
                time.sleep(0.05)  # spacing between trials, not synchronisation
        finally:
            for w in watchers:
                w.close()
    client.close()
    return samples


def session_start(prefix: str, trials: int, scan_time: int | None) -> list[float]:
    """Both BIRDs start at once → each has the other's block. The shipped config, or the same
    with ``scan time`` raised (BIRD's main loop then has no timer due and the first UPDATE
    waits for its 3 s poll cap)."""
    samples = []
    with Topology(prefix, [2]) as topo:
        a, b = topo.hosts
        nodes = {h.name: Node(h.name, {"bgp": {"ipv4Address": h.ip}}) for h in (a, b)}
        pools = [IPPool("p", {"cidr": "10.93.0.0/16"})]
        blocks = {a.name: "10.93.1.0/26", b.name: "10.93.2.0/26"}
        for h in (a, b):
            config = bgpconfig.compute(h.name, nodes, None, [], pools, [blocks[h.name]], uplink="eth0")
            assert config is not None
            text = bgpconfig.render(config)
            if scan_time is not None:
                text = text.replace("scan time 1;", f"scan time {scan_time};")
            (h.bird_dir / "bird.conf").write_text(text)
        for _ in range(trials):
            watchers = {a.name: RouteWatcher(a.ns), b.name: RouteWatcher(b.ns)}
            time.sleep(0.1)  # let `ip monitor` subscribe
            started = time.monotonic()
            for h in (a, b):
                h.spawn("bird", ["bird", "-f", "-c", str(h.bird_dir / "bird.conf"), "-s", str(h.bird_ctl)])
            done = [watchers[a.name].wait_for(blocks[b.name], 30), watchers[b.name].wait_for(blocks[a.name], 30)]
            samples.append(max(done) - started)
            for w in watchers.values():
                w.close()
            for h in (a, b):
                h.stop("bird")
                h.run("ip", "route", "flush", "proto", "bird", check=False)  # `persist` keeps them
    return samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--session-trials", type=int, default=5)
    args = parser.parse_args()
    prefix = f"bc{uuid.uuid4().hex[:5]}"
    results: dict[str, list[float]] = {}
    with EtcdCluster(1, prefix=prefix) as etcd:
        for mode in ("bgp", "vxlan"):
            results[mode] = run_mode(etcd, mode, args.trials, f"{prefix}{mode[0]}")
    print(f"{'mode':<6} {'trials':>6} {'p50 s':>8} {'p99 s':>8} {'max s':>8} {'goal s':>7} {'p50/goal':>9}")
    for mode, samples in results.items():
        p50, p99 = statistics.median(samples), percentile(samples, 0.99)
        print(f"{mode:<6} {len(samples):>6} {p50:>8.4f} {p99:>8.4f} {max(samples):>8.4f} {GOALS[mode]:>7.2f} "
              f"{p50 / GOALS[mode]:>9.3f}")
    if args.session_trials:
        shipped = session_start(f"{prefix}s", args.session_trials, None)
        slow = session_start(f"{prefix}t", args.session_trials, 10)
        print("BGP session start → first routes both ways (connect delay 1 s):")
        for label, values in (("shipped config (scan time 1)", shipped), ("same, scan time 10", slow)):
            print(f"  {label:<30} median {statistics.median(values):.2f} s  runs "
                  + " ".join(f"{x:.2f}" for x in values))
    b, v = results["bgp"], results["vxlan"]
    print(f"RESULT bgp_p50_s={statistics.median(b):.4f} bgp_p99_s={percentile(b, 0.99):.4f} "
          f"vxlan_p50_s={statistics.median(v):.4f} vxlan_p99_s={percentile(v, 0.99):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
