"""Runs a server module with a watch on Python's garbage collector
(`python -m bench.gcwatch MODULE ARGS...`), for `--profile`: a full
collection stops the event loop, and with thousands of connections that
is where latency spikes come from. Writes one line per collection that took
at least `THRESHOLD_MS`: "<monotonic start> <generation> <milliseconds>"."""

from __future__ import annotations

import gc
import os
import runpy
import sys
import time
from typing import Any

GC_LOG_ENV = "BENCH_GC_LOG"
THRESHOLD_MS = 1.0


def main() -> None:
    log = open(os.environ[GC_LOG_ENV], "a", buffering=1, encoding="ascii")  # noqa: SIM115 (open until exit)
    started = 0.0

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.monotonic()
            return
        took_ms = (time.monotonic() - started) * 1000
        if took_ms >= THRESHOLD_MS or info["generation"] == 2:
            log.write(f"{started:.6f} {info['generation']} {took_ms:.3f}\n")

    gc.callbacks.append(on_collection)
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def pauses(path: str, since: float, until: float) -> dict[str, Any]:
    """The collections that started between two monotonic times."""
    gen2 = count = 0
    total = 0.0
    longest = 0.0
    try:
        with open(path, encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    for line in lines:
        start, generation, took = line.split()
        if since <= float(start) <= until:
            count += 1
            gen2 += generation == "2"
            total += float(took)
            longest = max(longest, float(took))
    return {"over_1ms": count, "full": gen2, "total_ms": round(total, 1), "max_ms": round(longest, 1)}


if __name__ == "__main__":
    main()
