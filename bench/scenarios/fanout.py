"""fanout: N streams, events at a fixed rate R spread over their jobs.

Variants, each on a fresh server:
- "sweep": job streams (one user per connection, `--per-job` connections per
  job, 1 by default so each event has one recipient), at each connection
  count of the sweep;
- "my": at the largest count, N users each on `/my`;
- "capacity": at the largest count, 10 streams per job and events at a rate
  that offers 50,000 deliveries/s (a quarter above the 40,000 target), for a
  shorter time: when the server cannot keep up, the backlog it builds must
  still drain;
- on Nchan, when installed: the sweep's largest count, same rate, as job
  streams (Nchan has no per-user stream), each event POSTed to its channel.
Reports deliveries/s, latency percentiles, losses and the server's CPU (in
all, and per delivery).
"""

from __future__ import annotations

from typing import Any

from bench.loadgen import LoadGen
from bench.params import Params
from bench.scenarios.common import (
    compare_table,
    label,
    nchan_variants,
    open_streams,
    population,
    publish_and_measure,
    warm_up,
)
from bench.stack import Stack

NAME = "fanout"


#: Deliveries per second the capacity variant offers, and streams per job there.
CAPACITY_DELIVERIES = 50_000
CAPACITY_PER_JOB = 10


def settings(params: Params) -> dict[str, Any]:
    return {
        "sweep": params.connection_sweep([1_000, 2_500, 5_000, 10_000], [50, 200]),
        "rate": params.events_per_second(5_000, 200),
        "duration": params.seconds(20, 3),
        "per_job": params.subscribers_per_job(),
        "capacity_rate": (CAPACITY_DELIVERIES if not params.quick else 1_000) / CAPACITY_PER_JOB,
        "capacity_duration": min(params.seconds(20, 3), 10),
    }


def measure(
    server: str, connections: int, rate: float, duration: float, *, kind: str, per_job: int, role: str = "sweep"
) -> dict[str, Any]:
    """One variant on a fresh server."""
    with Stack(server, connections=connections) as stack:
        warm_up(stack)
        specs, jobs = population(stack, connections, per_job=per_job, kind=kind)
        with LoadGen(stack.port, connections, stack.load_cpus) as load:
            opened = open_streams(stack, load, specs)
            label = f"fanout-{kind}-x{per_job}"
            figures = publish_and_measure(stack, load, jobs, rate=rate, duration=duration, label=label)
            load.call("close_all", 60)
    return {
        "server": server,
        "role": role,
        "kind": kind,
        "connections": connections,
        "jobs": len(jobs),
        "per_job": per_job,
        "rate": rate,
        "duration": duration,
        "open_seconds": round(opened["seconds"], 2),
        "listen_queue_overflows_while_opening": opened["listen_queue_overflows"],
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
    variants.append(measure("hub", largest, chosen["rate"], chosen["duration"], kind="my", per_job=1, role="my"))
    variants.append(
        measure(
            "hub",
            largest,
            chosen["capacity_rate"],
            chosen["capacity_duration"],
            kind="jobs",
            per_job=CAPACITY_PER_JOB,
            role="capacity",
        )
    )
    args = (largest, chosen["rate"], chosen["duration"])
    compared = nchan_variants(lambda server: measure(server, *args, kind="jobs", per_job=chosen["per_job"]))
    variants += compared.pop("nchan").values()
    return {"settings": chosen, "variants": variants, **compared}


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    hub = [v for v in result["variants"] if v["server"] == "hub"]
    others = [v for v in result["variants"] if v["server"] != "hub"]
    out = [variant_row(v) for v in hub + others]
    # The ratios compare like with like: the hub's sweep at the count the others ran.
    same = [v for v in hub if v["role"] == "sweep" and others and v["connections"] == others[0]["connections"]]
    if same:
        out += table([same[0], *others])[1 + len(others) :]
    return out


#: The columns the ratio rows divide.
FIGURES = ("deliveries/s", "p50 ms", "p99 ms", "server CPU %", "deliveries/CPU-s", "CPU µs/delivery")


def table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per server (one variant each), the hub's first, and the ratios hub / each other."""
    return compare_table([variant_row(v) for v in results], FIGURES, key="variant")


def variant_row(v: dict[str, Any]) -> dict[str, Any]:
    latency = v["latency_ms"]
    return {
        "variant": f"{label(v['server'])} {v.get('role', 'sweep')}",
        "connections": v["connections"],
        "per job": v["per_job"],
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
        "CPU µs/delivery": v.get("server_cpu_us_per_delivery"),
        "load CPU %": v["loadgen_cpu_percent"],
    }
