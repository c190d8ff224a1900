"""Where a profiled server spent its time, from py-spy's raw samples
(`--profile`): the functions that were running (self time) and the hub or
peer functions that were on the stack (inclusive time)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

#: Frames from these files are the server's own code, not libraries.
OWN_CODE = ("hub/", "bench/peers/")
TOP = 15


def summarize(path: str) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        self_time[frames[-1]] += samples
        for frame in set(frames):
            if any(marker in frame for marker in OWN_CODE):
                inclusive[frame] += samples
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "percent": round(100 * n / total, 1)} for f, n in counter.most_common(TOP)]

    return {"samples": total, "self": share(self_time), "inclusive_own_code": share(inclusive)}


def markdown(name: str, summary: dict[str, Any]) -> str:
    if not summary.get("samples"):
        return f"### {name}\n\nno samples\n"
    lines = [f"### {name} ({summary['samples']:,} samples)\n", "| self % | function |", "| --- | --- |"]
    lines += [f"| {row['percent']} | `{row['function']}` |" for row in summary["self"]]
    lines += ["", "| on stack % | server function |", "| --- | --- |"]
    lines += [f"| {row['percent']} | `{row['function']}` |" for row in summary["inclusive_own_code"]]
    return "\n".join(lines) + "\n"
