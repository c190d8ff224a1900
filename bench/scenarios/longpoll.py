"""longpoll: N clients follow one job each by long-polling (cursor to cursor)
while events arrive at rate R: deliveries/s, latency, losses, server CPU (in
all, and per delivery). The same on Nchan, when installed: its long-poll
subscribers, asking message to message with If-Modified-Since and
If-None-Match, holds ending after the hub's long-poll timeout.

At the default load each job's events are 25 s apart, the hold timeout: the
next event lands as a hold ends. On Redis, Nchan answers the client's next
ask (with the previous message's Last-Modified and ETag) by holding it, not
with that event, which is lost to it; Nchan in memory and the hub lose none.
The same happens apart from the benchmark, with a 1 s hold and the second
message published within ~50 ms of its end.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bench.loadgen import BenchError, LoadGen
from bench.params import Params
from bench.scenarios.common import compare_table, label, nchan_variants, population, publish_and_measure, warm_up
from bench.stack import Stack

NAME = "longpoll"


def settings(params: Params) -> dict[str, Any]:
    return {
        # Each answer, and each hold that times out (every 25 s), is a new
        # request (authenticated, admitted, subscribed, read from history) at
        # a millisecond or more of the hub's CPU; 10,000 clients saturate a
        # hub process, so the default is half that, each job changing every 25 s.
        "connections": params.connection_count(5_000, 100),
        "rate": params.events_per_second(200, 100),
        # Long enough for holds that time out (every 25 s) to be part of it.
        "duration": params.seconds(60, 3),
    }


def measure(server: str, connections: int, rate: float, duration: float) -> dict[str, Any]:
    with Stack(server, connections=connections) as stack:
        warm_up(stack)
        streams, jobs = population(stack, connections)
        specs = [replace(s, path=s.path.replace("/sse/", "/poll/")) for s in streams]
        with LoadGen(stack.port, connections, stack.load_cpus) as load:
            # The loops run until stopped; the duration only bounds them.
            started = load.call(
                "start_longpoll",
                120 + connections / 25,  # generous: on a shared machine the server may get part of its core
                [{"specs": part} for part in load.split(specs)],
                duration=duration + 600,
                timeout=30.0,
            )
            failed = sum(r["failed"] for r in started)
            if failed:
                raise BenchError(f"{failed} long-poll clients did not get their first answer")
            stack.wait_subscribed(connections)
            figures = publish_and_measure(stack, load, jobs, rate=rate, duration=duration, label="longpoll")
            load.call("close_all", 60)
    return {
        "server": server,
        "connections": connections,
        "rate": rate,
        "duration": duration,
        **figures,
        **stack.diagnostics(),
    }


def run(params: Params) -> dict[str, Any]:
    chosen = settings(params)
    args = (chosen["connections"], chosen["rate"], chosen["duration"])
    return {"settings": chosen, **measure("hub", *args), **nchan_variants(lambda server: measure(server, *args))}


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return table([result, *result.get("nchan", {}).values()])


def table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per server, the hub's first, and the ratios hub / each other."""
    figures = ("deliveries/s", "p50 ms", "p99 ms", "server CPU %", "CPU ms/delivery")
    return compare_table([row(r) for r in results], figures)


def row(result: dict[str, Any]) -> dict[str, Any]:
    latency = result["latency_ms"]
    per_delivery = result.get("server_cpu_us_per_delivery")
    return {
        "server": label(result.get("server", "hub")),
        "clients": result["connections"],
        "events/s": result["rate"],
        "deliveries/s": result["deliveries_per_s"],
        "p50 ms": latency["p50_ms"],
        "p90 ms": latency["p90_ms"],
        "p99 ms": latency["p99_ms"],
        "max ms": latency["max_ms"],
        "lost": result["lost"],
        "dup": result["duplicates"],
        "server CPU %": result["server_cpu_percent"],
        "deliveries/CPU-s": result["deliveries_per_server_cpu_second"],
        "CPU ms/delivery": None if per_delivery is None else round(per_delivery / 1000, 3),
    }
