"""fanout: N streams, events at a fixed rate R spread over their jobs.

Variants: job streams (one user per connection, `--per-job` connections per
job, 1 by default so each event has one recipient), for each connection
count of the sweep; and at the largest count, N users each on `/my`.
Reports deliveries/s, latency percentiles, losses and the server's CPU.
"""

from __future__ import annotations

from typing import Any

from bench.loadgen import LoadGen
from bench.params import Params
from bench.scenarios.common import open_streams, population, publish_and_measure, warm_up
from bench.stack import Stack

NAME = "fanout"


def settings(params: Params) -> dict[str, Any]:
    return {
        "sweep": params.connection_sweep([1_000, 2_500, 5_000, 10_000], [50, 200]),
        "rate": params.events_per_second(5_000, 200),
        "duration": params.seconds(20, 3),
        "per_job": params.subscribers_per_job(),
    }


def measure(server: str, connections: int, rate: float, duration: float, *, kind: str, per_job: int) -> dict[str, Any]:
    """One variant on a fresh server."""
    with Stack(server, connections=connections) as stack:
        warm_up(stack)
        specs, jobs = population(stack, connections, per_job=per_job, kind=kind)
        with LoadGen(stack.port, connections, stack.load_cpus) as load:
            opened = open_streams(load, specs)
            figures = publish_and_measure(stack, load, jobs, rate=rate, duration=duration, label=f"fanout-{kind}")
            load.call("close_all", 60)
    return {
        "server": server,
        "kind": kind,
        "connections": connections,
        "jobs": len(jobs),
        "per_job": per_job,
        "rate": rate,
        "duration": duration,
        "open_seconds": round(opened["seconds"], 2),
        **figures,
        **stack.diagnostics(),
    }


def run(params: Params) -> dict[str, Any]:
    chosen = settings(params)
    variants = []
    for connections in chosen["sweep"]:
        variants.append(
            measure("hub", connections, chosen["rate"], chosen["duration"], kind="jobs", per_job=chosen["per_job"])
        )
    largest = max(chosen["sweep"])
    variants.append(measure("hub", largest, chosen["rate"], chosen["duration"], kind="my", per_job=1))
    return {"settings": chosen, "variants": variants}


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [variant_row(v) for v in result["variants"]]


def variant_row(v: dict[str, Any]) -> dict[str, Any]:
    latency = v["latency_ms"]
    return {
        "variant": f"{v['server']} {'/my' if v['kind'] == 'my' else 'job streams'}",
        "connections": v["connections"],
        "events/s": v["rate"],
        "deliveries/s": v["deliveries_per_s"],
        "p50 ms": latency["p50_ms"],
        "p90 ms": latency["p90_ms"],
        "p99 ms": latency["p99_ms"],
        "max ms": latency["max_ms"],
        "lost": v["lost"],
        "dup": v["duplicates"],
        "server CPU %": v["server_cpu_percent"],
        "deliveries/CPU-s": v["deliveries_per_server_cpu_second"],
        "load CPU %": v["loadgen_cpu_percent"],
    }
