"""idle: N streams held open with nothing to say but keepalives.

Reports the server's resident memory per connection above its baseline (the
server after start and one warm-up stream, before the N connect), and the CPU
it spends over a window in which only keepalives (and its own timers) run.
The same on Nchan, when installed: its nginx worker's RSS and CPU, with
Nchan's EventSource pings at the hub's keepalive interval.
"""

from __future__ import annotations

import time
from typing import Any

from bench.loadgen import LoadGen
from bench.params import Params
from bench.scenarios.common import (
    MIB,
    compare_table,
    label,
    machine_during,
    nchan_variants,
    open_streams,
    population,
    warm_up,
)
from bench.stack import Stack
from bench.system import core_times, cpu_percent

NAME = "idle"
#: After the last connect, time for the server to finish setting them up.
SETTLE_SECONDS = 3.0


def settings(params: Params) -> dict[str, Any]:
    return {
        "connections": params.connection_count(10_000, 200),
        "window": params.seconds(30, 4),
        # Quick runs are shorter than the default 15 s keepalive; a 1 s one
        # keeps them exercising it.
        "keepalive_seconds": 1 if params.quick else 15,
    }


def measure(server: str, connections: int, window: float, keepalive_seconds: float) -> dict[str, Any]:
    env = {"HUB_KEEPALIVE_SECONDS": str(keepalive_seconds)}
    with Stack(server, connections=connections, env=env) as stack:
        warm_up(stack)
        specs, _ = population(stack, connections)
        baseline = stack.probe.sample()
        with LoadGen(stack.port, connections, stack.load_cpus) as load:
            opened = open_streams(stack, load, specs)
            time.sleep(SETTLE_SECONDS)
            load.stats(reset=True)
            with stack.profiled("idle"):
                cores_before, before = core_times(), stack.probe.sample()
                time.sleep(window)
                after, cores_after = stack.probe.sample(), core_times()
            stats = load.stats()
            load.call("close_all", 60)
    grown = after.rss_bytes - baseline.rss_bytes
    return {
        "server": server,
        "connections": connections,
        "open_seconds": round(opened["seconds"], 2),
        "connects_per_s": round(connections / opened["seconds"], 1),
        "listen_queue_overflows_while_opening": opened["listen_queue_overflows"],
        "rss_baseline_mib": round(baseline.rss_bytes / MIB, 1),
        "rss_mib": round(after.rss_bytes / MIB, 1),
        "rss_per_connection_kib": round(grown / connections / 1024, 2),
        "idle_cpu_percent": round(cpu_percent(before, after), 2),
        "window_s": round(after.at - before.at, 1),
        "keepalive_seconds": keepalive_seconds,
        "keepalives_received": stats["keepalives"],
        "streams_open_at_end": stats["streams_open"],
        "streams_closed_by_server": stats["streams_closed_by_server"],
        **machine_during(stats, cores_before, cores_after),
        **stack.diagnostics(),
    }


def run(params: Params) -> dict[str, Any]:
    chosen = settings(params)
    args = (chosen["connections"], chosen["window"], chosen["keepalive_seconds"])
    return {"settings": chosen, **measure("hub", *args), **nchan_variants(lambda server: measure(server, *args))}


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return table([result, *result.get("nchan", {}).values()])


def table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per server, the hub's first, and the ratios hub / each other."""
    return compare_table([row(r) for r in results], ("RSS MiB", "KiB/connection", "idle CPU %", "connects/s"))


def row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": label(r["server"]),
        "connections": r["connections"],
        "open": r["streams_open_at_end"],
        "RSS baseline MiB": r["rss_baseline_mib"],
        "RSS MiB": r["rss_mib"],
        "KiB/connection": r["rss_per_connection_kib"],
        "idle CPU %": r["idle_cpu_percent"],
        "window s": r["window_s"],
        "keepalives": r["keepalives_received"],
        "connects/s": r["connects_per_s"],
    }
