"""Datastore faults: IPAM under lost replies and a 3-member etcd whose leader keeps dying.

Self-contained, two runs on real TLS etcd:

1. Lost replies (1 member behind tests/support/faultproxy.py): rounds of IPAM assign
   and release, each with the reply to one of its writes lost (connection closed or
   reply held past the client timeout) after etcd applied it.
2. Storm (3 members): ``--procs`` processes assign and release addresses (one handle
   per assignment, hosts shared so blocks are contended and borrowed) while the leader
   is killed with SIGKILL and restarted ``--kills`` times; requests in flight on the
   leader lose their replies for real.

At the end the blocks are read directly and compared with what every caller was told:
``double_assigned`` handles own more than one address, ``leaked`` addresses are held by
no live caller (or not the address its caller was told), ``duplicates`` addresses were
told to two callers, ``lost`` live callers own nothing. Goal: all 0.

    .venv/bin/python bench/datastore_faults.py [--procs 8] [--ops 2000] [--kills 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycalico.datastore.etcd import EtcdClient  # noqa: E402
from pycalico.errors import PycalicoError  # noqa: E402
from pycalico.ipam import IPAM  # noqa: E402
from pycalico.model import IPPool, ResourceStore  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402
from tests.support.faultproxy import FaultProxy, LosingClient  # noqa: E402

POOL_CIDR = "10.250.0.0/16"


@dataclass
class Ledger:
    """What callers were told: live handles and their address, and how many operations ran."""

    told: dict[str, str] = field(default_factory=dict)
    ops: int = 0
    errors: int = 0
    unknown_settled: int = 0

    def merge(self, other: dict[str, Any]) -> None:
        for handle, ip in other["told"].items():
            if handle in self.told:
                raise AssertionError(f"handle {handle} used twice")
            self.told[handle] = ip
        self.ops += other["ops"]
        self.errors += other["errors"]
        self.unknown_settled += other["unknown"]


def _release_until_done(ipam: IPAM, handle: str, deadline: float) -> None:
    """After a failed operation the caller does not know what its handle holds: it
    releases the handle (idempotent) until that succeeds, as a CNI DEL would."""
    while True:
        try:
            ipam.release_by_handle(handle)
            return
        except PycalicoError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _worker(index: int, endpoints: list[str], tls: Any, min_ops: int, stop_file: str, hosts: int,
            out: Any) -> None:
    client = EtcdClient(endpoints, tls, timeout=5.0, connect_timeout=1.0)
    ipam = IPAM(client)
    rng = random.Random(index)
    told: dict[str, str] = {}
    ops = errors = n = 0
    host = f"storm-node-{index % hosts}"
    while ops < min_ops or not Path(stop_file).exists():
        if ops > min_ops * 20:
            break
        if told and (len(told) > 12 or rng.random() < 0.45):
            handle = rng.choice(sorted(told))
            try:
                ipam.release_by_handle(handle)
                del told[handle]
            except PycalicoError:
                errors += 1
                _release_until_done(ipam, handle, time.monotonic() + 120)
                del told[handle]
        else:
            handle = f"storm.{index}.{n}"
            n += 1
            try:
                [ip] = ipam.auto_assign(handle, {"node": host, "pod": handle}, host)
                told[handle] = str(ip.ip)
            except PycalicoError:
                errors += 1
                _release_until_done(ipam, handle, time.monotonic() + 120)
        ops += 1
    client.close()
    out.put({"told": told, "ops": ops, "errors": errors, "unknown": client.outcomes_unknown})


def leader(cluster: EtcdCluster) -> int | None:
    for i, m in enumerate(cluster.members):
        if m.proc is None or m.proc.poll() is not None:
            continue
        try:
            client = EtcdClient([m.client_url], cluster.tls(), timeout=2.0, connect_timeout=1.0)
            status = client.call("/v3/maintenance/status", {})
            client.close()
        except PycalicoError:
            continue
        if status.get("leader") and status.get("leader") == status.get("header", {}).get("member_id"):
            return i
    return None


def audit(client: EtcdClient, ledger: Ledger) -> dict[str, int]:
    """Compare the blocks with what the callers were told."""
    ipam = IPAM(client)
    held: dict[str, list[str]] = {}
    owners: dict[str, int] = {}
    for block in ipam.blocks():
        for ordinal, attr in block.allocated():
            ip = str(block.address(ordinal))
            owners[ip] = owners.get(ip, 0) + 1
            held.setdefault(str(attr.get("handle_id")), []).append(ip)
    told_ips: dict[str, int] = {}
    for ip in ledger.told.values():
        told_ips[ip] = told_ips.get(ip, 0) + 1
    double = sum(1 for ips in held.values() if len(ips) > 1)
    leaked = sum(1 for h, ips in held.items() for ip in ips if ledger.told.get(h) != ip)
    lost = sum(1 for h, ip in ledger.told.items() if held.get(h) != [ip])
    duplicates = sum(c - 1 for c in told_ips.values() if c > 1) + sum(c - 1 for c in owners.values() if c > 1)
    problems = ipam.check().block_problems
    return {"double_assigned": double, "leaked": leaked, "duplicates": duplicates, "lost": lost,
            "block_problems": len(problems)}


def lost_reply_rounds(rounds: int) -> tuple[Ledger, dict[str, int], int]:
    """Assign and release with one write's reply lost in each operation."""
    ledger = Ledger()
    with EtcdCluster(1, prefix="bdflost") as cluster, FaultProxy(cluster.endpoints[0]) as proxy:
        direct = cluster.client()
        ResourceStore(direct).create(IPPool("faults", {"cidr": POOL_CIDR, "blockSize": 26}))
        client = LosingClient(proxy, cluster.tls(), timeout=1.0)
        ipam = IPAM(client)
        rng = random.Random(7)
        for i in range(rounds):
            handle = f"lost.{i}"
            # writes of an assign: 1-3 claim a block when one is needed, then the commit
            client.lose_write(rng.choice([1, 1, 2, 3, 4]), rng.choice(["close", "close", "delay"]))
            [ip] = ipam.auto_assign(handle, {"pod": handle}, f"lost-node-{i % 3}")
            ledger.told[handle] = str(ip.ip)
            ledger.ops += 1
            client.lose_write(0)
            if i % 3 == 2:
                gone = rng.choice(sorted(ledger.told))
                client.lose_write(1, rng.choice(["close", "delay"]))
                ipam.release_by_handle(gone)
                del ledger.told[gone]
                ledger.ops += 1
                client.lose_write(0)
        lost = proxy.replies_lost
        result = audit(direct, ledger)
        client.close()
        direct.close()
    return ledger, result, lost


def storm(procs: int, total_ops: int, kills: int, hosts: int = 4,
          log: Any = print) -> tuple[Ledger, dict[str, int], int]:
    """``procs`` processes doing IPAM while the leader is killed ``kills`` times."""
    ledger = Ledger()
    ctx = multiprocessing.get_context("fork")
    with EtcdCluster(3, prefix="bdfstorm") as cluster:
        direct = cluster.client(timeout=10)
        ResourceStore(direct).create(IPPool("storm", {"cidr": POOL_CIDR, "blockSize": 28}))
        stop_file = str(cluster.base / "stop")
        out = ctx.Queue()
        workers = [ctx.Process(target=_worker, args=(i, cluster.endpoints, cluster.tls(),
                                                      max(1, total_ops // procs), stop_file, hosts, out))
                   for i in range(procs)]
        for w in workers:
            w.start()
        done_kills = 0
        try:
            time.sleep(1.0)
            while done_kills < kills:
                victim = leader(cluster)
                if victim is None:
                    time.sleep(0.2)
                    continue
                cluster.kill(victim)
                done_kills += 1
                log(f"kill {done_kills}: leader m{victim} killed")
                time.sleep(1.5)
                cluster.restart_member(victim, timeout=60)
                time.sleep(1.0)
        finally:
            Path(stop_file).touch()
            results = [out.get(timeout=600) for _ in workers]
            for w in workers:
                w.join(60)
        for r in results:
            ledger.merge(r)
        result = audit(direct, ledger)
        direct.close()
    return ledger, result, done_kills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--ops", type=int, default=2000, help="storm operations in all (at least)")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--lost-rounds", type=int, default=60)
    args = parser.parse_args()

    started = time.monotonic()
    lost_ledger, lost_result, lost = lost_reply_rounds(args.lost_rounds)
    print(f"lost replies: {lost_ledger.ops} operations, {lost} replies lost after etcd applied them, "
          f"{time.monotonic() - started:.1f} s: {lost_result}")
    started = time.monotonic()
    storm_ledger, storm_result, kills = storm(args.procs, args.ops, args.kills)
    print(f"storm: {storm_ledger.ops} operations from {args.procs} processes, {kills} leader kills, "
          f"{storm_ledger.unknown_settled} writes with outcome unknown settled, "
          f"{storm_ledger.errors} operations failed (and were released), {time.monotonic() - started:.1f} s: "
          f"{storm_result}")
    total = {k: lost_result[k] + storm_result[k] for k in lost_result}
    print(json.dumps({"lost_replies": lost_result, "storm": storm_result}))
    print(f"RESULT ops={lost_ledger.ops + storm_ledger.ops} double_assigned={total['double_assigned']} "
          f"leaked={total['leaked']} duplicates={total['duplicates']} lost={total['lost']} "
          f"replies_lost={lost} storm_unknown={storm_ledger.unknown_settled} leader_kills={kills} "
          f"failed_ops={storm_ledger.errors}")


if __name__ == "__main__":
    main()
