"""broadcast: N streams on one job; how long until the last of them has an event.

A job belongs to one user and the hub shows it to nobody else, so the N
streams are that user's (the stack raises the per-user limit to allow it).
Events are spaced so that each broadcast is over before the next starts; for
each, the time from publish to the first and to the last delivery, and the
server's CPU per delivery over the whole window. The same on Nchan, when
installed: N subscribers of one channel.
"""

from __future__ import annotations

from typing import Any

from bench.loadgen import LoadGen
from bench.params import Params
from bench.publisher import Publisher
from bench.scenarios.common import (
    compare_table,
    cpu_per_delivery_us,
    label,
    machine_during,
    nchan_variants,
    open_streams,
    population,
    warm_up,
)
from bench.stack import Stack
from bench.stats import percentile_of
from bench.system import core_times, cpu_percent

NAME = "broadcast"


def settings(params: Params) -> dict[str, Any]:
    return {
        "connections": params.connection_count(10_000, 200),
        "events": 10 if not params.quick else 4,
        # One event per second by default: far apart enough to measure each alone.
        "rate": params.events_per_second(1.0, 4.0),
    }


def measure(server: str, connections: int, events: int, rate: float) -> dict[str, Any]:
    with Stack(server, connections=connections) as stack:
        warm_up(stack)
        specs, jobs = population(stack, connections, per_job=connections)
        with LoadGen(stack.port, connections, stack.load_cpus) as load:
            open_streams(stack, load, specs, track_events=True)
            publisher = Publisher(stack.sink, jobs, rate, events / rate, stack.load_cpus)
            with publisher, stack.profiled("broadcast"):
                load.stats(reset=True)
                cores_before, before = core_times(), stack.probe.sample()
                publisher.start()
                published = publisher.result()
                drained = load.call("expect", 40, counts=published["counts"], timeout=30)
                after, cores_after = stack.probe.sample(), core_times()
            stats = load.stats(counts=published["counts"])
            load.call("close_all", 60)
    per_event = []
    for key, (sent, first, last, receipts) in sorted(stats["events"].items(), key=lambda kv: kv[1][0]):
        per_event.append(
            {
                "event": key.split("|")[1],
                "first_ms": round((first - sent) / 1e6, 2),
                "last_ms": round((last - sent) / 1e6, 2),
                "receipts": receipts,
            }
        )
    lasts = [e["last_ms"] for e in per_event]
    firsts = [e["first_ms"] for e in per_event]
    accounting = stats["accounting"]
    return {
        "server": server,
        "connections": connections,
        "events": published["sent"],
        "last_delivery_p50_ms": percentile_of(lasts, 0.5),
        "last_delivery_max_ms": max(lasts) if lasts else None,
        "first_delivery_p50_ms": percentile_of(firsts, 0.5),
        "per_event": per_event,
        "latency_ms": stats["latency"].summary(),
        "lost": accounting["lost"],
        "duplicates": accounting["duplicates"],
        "all_delivered": all(d["complete"] for d in drained),
        "server_cpu_percent": round(cpu_percent(before, after), 1),
        "server_cpu_seconds": round(after.cpu_seconds - before.cpu_seconds, 3),
        "server_cpu_us_per_delivery": cpu_per_delivery_us(after.cpu_seconds - before.cpu_seconds, stats["deliveries"]),
        **machine_during(stats, cores_before, cores_after),
        **stack.diagnostics(),
    }


def run(params: Params) -> dict[str, Any]:
    chosen = settings(params)
    args = (chosen["connections"], chosen["events"], chosen["rate"])
    return {"settings": chosen, **measure("hub", *args), **nchan_variants(lambda server: measure(server, *args))}


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return table([result, *result.get("nchan", {}).values()])


def table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per server, the hub's first, and the ratios hub / each other."""
    figures = ("last delivery p50 ms", "last delivery max ms", "first delivery p50 ms", "CPU µs/delivery")
    return compare_table([row(r) for r in results], figures)


def row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": label(r["server"]),
        "subscribers": r["connections"],
        "events": r["events"],
        "last delivery p50 ms": r["last_delivery_p50_ms"],
        "last delivery max ms": r["last_delivery_max_ms"],
        "first delivery p50 ms": r["first_delivery_p50_ms"],
        "lost": r["lost"],
        "dup": r["duplicates"],
        "server CPU %": r["server_cpu_percent"],
        "CPU µs/delivery": r.get("server_cpu_us_per_delivery"),
    }
