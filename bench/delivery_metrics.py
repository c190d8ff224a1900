"""`python -m bench.delivery_metrics`: what counting one delivery costs the
hub's metrics, in CPU time: with one process (counted in memory), with
several (HUB_PROCESSES: counted in memory, written to prometheus-client's
files once per turn of the event loop), and, for scale, with a
prometheus-client Counter.inc and Histogram.observe per delivery in
multiprocess mode. Each mode runs in a fresh interpreter, since the library
picks its mode when it is imported."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

SUBSCRIBERS = 10_000
FANOUTS = 20
REPEATS = 5
MODES = ("one process", "several processes", "a metric call per delivery")


def measure(mode: str) -> float:
    """µs of CPU per delivery, the best of REPEATS rounds of FANOUTS
    fan-outs of one event to SUBSCRIBERS."""
    from prometheus_client import Counter, Histogram

    from hub.store.events import Event
    from hub.web.metrics import LATENCY_BUCKETS, HubMetrics

    sent: Callable[[str, Sequence[Event], bool, bool], None] = HubMetrics().deliveries.sent
    if mode == MODES[2]:
        delivered = Counter("delivered", "", ["transport"], registry=None)
        latency = Histogram("latency", "", buckets=LATENCY_BUCKETS, registry=None)

        def sent(transport: str, events: Sequence[Event], live: bool, resumed: bool) -> None:
            delivered.labels(transport).inc(len(events))
            now = time.time()
            for event in events:
                latency.observe(now - (event.published_at or now))

    async def rounds() -> float:
        best = float("inf")
        for _ in range(REPEATS):
            started = time.process_time()
            for n in range(FANOUTS):
                events = [Event("{}", f"1-{n}", time.time() - 0.003)]
                for _ in range(SUBSCRIBERS):
                    sent("sse", events, True, False)
                await asyncio.sleep(0)  # the event loop turns between fan-outs
            best = min(best, (time.process_time() - started) / (FANOUTS * SUBSCRIBERS) * 1e6)
        return best

    return asyncio.run(rounds())


def main() -> int:
    if len(sys.argv) > 1:  # one mode, in this interpreter
        print(f"{measure(sys.argv[1]):.3f}")
        return 0
    for mode in MODES:
        env: dict[str, Any] = dict(os.environ)
        with tempfile.TemporaryDirectory() as folder:
            if mode != MODES[0]:
                env["PROMETHEUS_MULTIPROC_DIR"] = folder
            out = subprocess.run(
                [sys.executable, "-m", "bench.delivery_metrics", mode], env=env, capture_output=True, text=True
            )
        print(f"{mode}: {out.stdout.strip() or out.stderr.strip()} µs of CPU per delivery")
    return 0


if __name__ == "__main__":
    sys.exit(main())
