#!/usr/bin/env python3
"""The longest gap between answered pings of `ping -D` output, per step window.

    ping_gaps.py <ping log> <steps.json>   (steps: [{"step": name, "start": epoch, "end": epoch}])

Prints JSON: [{"step", "replies", "gap_max_s", "lost", "loss_gap_max_s", "stall_max_s"}] plus an
"all" row; a reply is a line with "[<epoch>] ... bytes from"; a step's gap is the longest span
between consecutive replies that overlaps its window (a window with no reply at all is a gap from
its start to its end). The icmp_seq numbers tell the two kinds of gap apart: ``lost`` pings are
sequence numbers missing between answered ones and ``loss_gap_max_s`` the longest gap around
such a loss (the network's); ``stall_max_s`` the longest gap between consecutive sequence numbers,
where nothing was lost and ping itself sent late (a starved single-vCPU VM does that).
"""

import json
import re
import sys
from itertools import pairwise

REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from ")
SEQ = re.compile(r"icmp_seq=(\d+)")


def reply_times(lines) -> list[float]:  # type: ignore[no-untyped-def]
    return sorted(float(m.group(1)) for m in map(REPLY.match, lines) if m)


def gap_rows(times: list[float], steps: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    rows = []
    for step in steps + [{"step": "all", "start": steps[0]["start"], "end": steps[-1]["end"]}]:
        start, end = float(step["start"]), float(step["end"])
        inside = [t for t in times if start <= t <= end]
        before = [t for t in times if t < start][-1:]
        after = [t for t in times if t > end][:1]
        points = before + inside + after
        gap = max((b - a for a, b in pairwise(points)), default=end - start)
        rows.append({"step": step["step"], "replies": len(inside), "gap_max_s": round(gap, 3)})
    return rows


def answered(lines) -> list[tuple[float, int]]:  # type: ignore[no-untyped-def]
    """(time, icmp_seq) of each answered ping, in time order; duplicates (DUP!) left out."""
    out: dict[int, float] = {}
    for line in lines:
        m, seq = REPLY.match(line), SEQ.search(line)
        if m and seq:
            out.setdefault(int(seq.group(1)), float(m.group(1)))
    return sorted((t, seq) for seq, t in out.items())


def loss_rows(replies: list[tuple[float, int]], steps: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    rows = []
    for step in steps + [{"step": "all", "start": steps[0]["start"], "end": steps[-1]["end"]}]:
        start, end = float(step["start"]), float(step["end"])
        inside = [r for r in replies if start <= r[0] <= end]
        points = [r for r in replies if r[0] < start][-1:] + inside + [r for r in replies if r[0] > end][:1]
        lost, loss_gap, stall = 0, 0.0, 0.0
        for (ta, sa), (tb, sb) in pairwise(points):
            if sb > sa + 1:
                lost += sb - sa - 1
                loss_gap = max(loss_gap, tb - ta)
            else:
                stall = max(stall, tb - ta)
        rows.append({"lost": lost, "loss_gap_max_s": round(loss_gap, 3), "stall_max_s": round(stall, 3)})
    return rows


def main() -> int:
    with open(sys.argv[1]) as f:
        lines = f.readlines()
    with open(sys.argv[2]) as f:
        steps = json.load(f)
    rows = gap_rows(reply_times(lines), steps)
    for row, loss in zip(rows, loss_rows(answered(lines), steps), strict=True):
        row.update(loss)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
