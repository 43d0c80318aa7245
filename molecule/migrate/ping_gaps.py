#!/usr/bin/env python3
"""The longest gap between answered pings of `ping -D` output, per step window.

    ping_gaps.py <ping log> <steps.json>   (steps: [{"step": name, "start": epoch, "end": epoch}])

Prints JSON: [{"step", "replies", "gap_max_s"}] plus an "all" row; a reply is a line with
"[<epoch>] ... bytes from"; a step's gap is the longest span between consecutive replies that
overlaps its window (a window with no reply at all is a gap from its start to its end).
"""

import json
import re
import sys
from itertools import pairwise

REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from ")


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


def main() -> int:
    with open(sys.argv[1]) as f:
        times = reply_times(f)
    with open(sys.argv[2]) as f:
        steps = json.load(f)
    print(json.dumps(gap_rows(times, steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
