"""Watch fan-out: ``--agents`` watching agents on one TLS etcd; a new block → seen by all.

Self-contained: a 1-member TLS etcd; ``--procs`` processes hold ``--agents`` real watch
streams between them (each one HTTP ``/v3/watch`` on the IPAM block prefix, exactly
the stream an agent's syncer opens). Then ``--writes`` Calico-sized blocks are written
one at a time, ``--gap`` seconds apart; each write's fan-out time is from just before
its put until the last stream has the event. etcd's CPU (utime+stime from /proc) over
the writes, less its CPU over an idle period of the same length, per write.

    .venv/bin/python bench/watch_fanout.py [--agents 100] [--procs 4] [--writes 50]

Goal: fanout_p99_s ≤ 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycalico.datastore.etcd import EtcdClient, TlsConfig  # noqa: E402
from pycalico.ipam import AllocationBlock  # noqa: E402
from pycalico.model import keys  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402


def watcher_process(endpoints: list[str], tls: tuple[str, str, str], streams: int, start: int,
                    ready: Any, stop: Any, results: Any) -> None:
    """``streams`` watch streams in threads; reports {stream: {key: seen_at}} when stopped."""
    client = EtcdClient(endpoints, TlsConfig(*tls))
    seen: list[dict[str, float]] = [{} for _ in range(streams)]
    opened = threading.Semaphore(0)
    handles = [client.watch_stream(keys.BLOCK_PREFIX_V4, start) for _ in range(streams)]

    def run(i: int) -> None:
        stream = handles[i]
        stream.open()
        opened.release()
        for batch in stream:
            now = time.time()
            for event in batch:
                seen[i].setdefault(event.kv.key, now)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(streams)]
    for t in threads:
        t.start()
    for _ in range(streams):
        opened.acquire()
    ready.put(sum(client.watches_opened.values()))
    stop.wait()
    for stream in handles:
        stream.close()
    results.put(seen)


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--gap", type=float, default=0.1)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    with EtcdCluster(1, prefix=f"wf{uuid.uuid4().hex[:5]}") as etcd:
        client = etcd.client()
        pid = etcd.members[0].proc.pid  # type: ignore[union-attr]
        tls = etcd.tls()
        start = client.revision() + 1
        ready, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        per = [args.agents // args.procs + (1 if i < args.agents % args.procs else 0) for i in range(args.procs)]
        procs = [ctx.Process(target=watcher_process,
                             args=(etcd.endpoints, (tls.ca_file, tls.cert_file, tls.key_file), n, start,
                                   ready, stop, results))
                 for n in per if n]
        for p in procs:
            p.start()
        streams = sum(ready.get(timeout=120) for _ in procs)
        assert streams == args.agents, f"{streams} streams open, wanted {args.agents}"
        blocks = [f"10.{96 + i // 1024}.{(i % 1024) // 4}.{(i % 4) * 64}/26" for i in range(args.writes)]
        values = [json.dumps(AllocationBlock.new(b, f"host:node-{i}").to_json()) for i, b in enumerate(blocks)]
        idle_started, idle_cpu = time.monotonic(), cpu_ms(pid)
        time.sleep(args.writes * args.gap)  # etcd's idle cost with the streams open (progress notifies etc.)
        idle_ms_per_s = (cpu_ms(pid) - idle_cpu) / (time.monotonic() - idle_started)
        written: dict[str, float] = {}
        busy_started, busy_cpu = time.monotonic(), cpu_ms(pid)
        for block, value in zip(blocks, values, strict=True):
            key = keys.block_key(block)
            written[key] = time.time()
            client.put(key, value)
            time.sleep(args.gap)
        time.sleep(1.0)  # let the last deliveries arrive
        busy_s = time.monotonic() - busy_started
        etcd_ms = (cpu_ms(pid) - busy_cpu - idle_ms_per_s * busy_s) / args.writes
        stop.set()
        seen: list[dict[str, float]] = []
        for _ in procs:
            seen.extend(results.get(timeout=60))
        for p in procs:
            p.join(10)
        client.close()
    fanout: list[float] = []
    missing = 0
    for key, at in written.items():
        times = [s.get(key) for s in seen]
        missing += sum(1 for t in times if t is None)
        fanout.append(max(t for t in times if t is not None) - at)
    fanout.sort()
    p99 = fanout[min(len(fanout) - 1, int(len(fanout) * 0.99))]
    print(f"{args.agents} watch streams in {len(procs)} processes, {args.writes} block writes {args.gap}s apart; "
          f"{missing} deliveries missing")
    print(f"fan-out (write → seen by all): p50 {statistics.median(fanout) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {fanout[-1] * 1000:.1f} ms; goal p99 ≤ 1 s")
    print(f"etcd CPU per write (idle {idle_ms_per_s:.1f} ms/s subtracted): {etcd_ms:.2f} ms")
    print(f"RESULT fanout_p50_s={statistics.median(fanout):.4f} fanout_p99_s={p99:.4f} "
          f"etcd_cpu_ms_per_write={etcd_ms:.2f} missing={missing}")
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
