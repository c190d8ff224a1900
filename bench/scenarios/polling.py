"""polling: what the hub replaces. N clients GET their job's status every 2 s,
against N SSE streams receiving the same changes; each on a fresh server.

Reports, for each: server CPU, requests, bytes, and staleness (from a change
to the client seeing it). A poller sees a change at its next poll, and never
sees a change that a later one overwrote first ("changes skipped"). When the
polls saturate the server's core, the CPU they would need is projected from
the CPU per request, which is what the ratio uses.
"""

from __future__ import annotations

import time
from typing import Any

from bench.clients import ClientSpec
from bench.loadgen import LoadGen
from bench.params import Params
from bench.publisher import Publisher
from bench.scenarios.common import machine_during, open_streams, population, publish_and_measure, warm_up
from bench.stack import Stack
from bench.system import core_times, cpu_percent

NAME = "polling"
POLL_INTERVAL = 2.0


def settings(params: Params) -> dict[str, Any]:
    connections = params.connection_count(10_000, 100)
    return {
        "connections": connections,
        "poll_interval": POLL_INTERVAL,
        # By default each job changes every 5 s: slow enough for polling to
        # see most changes, the case most favourable to polling.
        "rate": params.events_per_second(connections / 5, connections / 5),
        "duration": params.seconds(30, 6),
    }


def measure_polling(connections: int, rate: float, duration: float) -> dict[str, Any]:
    with Stack("hub", connections=connections) as stack:
        warm_up(stack)
        streams, jobs = population(stack, connections)
        specs = [ClientSpec(f"/api/v1/jobs/{s.jobs[0]}", s.token, s.jobs) for s in streams]
        with LoadGen(stack.port, connections, stack.load_cpus) as load:
            load.call(
                "start_polling",
                60,
                [{"specs": part} for part in load.split(specs)],
                duration=duration + 120,
                interval=POLL_INTERVAL,
            )
            time.sleep(POLL_INTERVAL + 1)  # every poller has started its rhythm
            publisher = Publisher(stack.sink, jobs, rate, duration, stack.load_cpus)
            with publisher, stack.profiled("polling"):
                load.stats(reset=True)
                cores_before, before = core_times(), stack.probe.sample()
                publisher.start()
                published = publisher.result()
                time.sleep(POLL_INTERVAL)  # the last changes get their poll too
                after, cores_after = stack.probe.sample(), core_times()
            stats = load.stats()
            load.call("close_all", 60)
    window = after.at - before.at
    cpu = after.cpu_seconds - before.cpu_seconds
    intended = connections / POLL_INTERVAL
    achieved = stats["requests"] / window
    per_request = cpu / stats["requests"] if stats["requests"] else 0.0
    return {
        "connections": connections,
        "events_published": published["sent"],
        "server_cpu_seconds": round(cpu, 2),
        "server_cpu_percent": round(cpu_percent(before, after), 1),
        "window_s": round(window, 1),
        "requests": stats["requests"],
        "requests_per_s": round(achieved, 1),
        "requests_per_s_intended": intended,
        "cpu_ms_per_request": round(per_request * 1000, 3),
        # What 2-second polling by all N would take, saturated or not.
        "projected_cpu_percent": round(max(100 * cpu / window, 100 * per_request * intended), 1),
        "bytes_in": stats["bytes_in"],
        "bytes_out": stats["bytes_out"],
        "staleness_ms": stats["latency"].summary(),
        **stats["polling"],
        "errors": stats["errors"],
        **machine_during(stats, cores_before, cores_after),
        **stack.diagnostics(),
    }


def measure_sse(connections: int, rate: float, duration: float) -> dict[str, Any]:
    with Stack("hub", connections=connections) as stack:
        warm_up(stack)
        specs, jobs = population(stack, connections)
        with LoadGen(stack.port, connections, stack.load_cpus) as load:
            open_streams(stack, load, specs)
            figures = publish_and_measure(stack, load, jobs, rate=rate, duration=duration, label="sse")
            load.call("close_all", 60)
    return {
        "connections": connections,
        **figures,
        "staleness_ms": figures["latency_ms"],
        "projected_cpu_percent": figures["server_cpu_percent"],
        **stack.diagnostics(),
    }


def run(params: Params) -> dict[str, Any]:
    chosen = settings(params)
    args = (chosen["connections"], chosen["rate"], chosen["duration"])
    polled = measure_polling(*args)
    streamed = measure_sse(*args)
    return {
        "settings": chosen,
        "polling": polled,
        "sse": streamed,
        # How many times the CPU of SSE polling needs (the target: at least 20).
        "cpu_ratio_polling_to_sse": _ratio(polled["projected_cpu_percent"], streamed["server_cpu_percent"]),
        "bytes_ratio_polling_to_sse": _ratio(
            polled["bytes_in"] + polled["bytes_out"], streamed["bytes_in"] + streamed["bytes_out"]
        ),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 1) if b else None


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name in ("polling", "sse"):
        r = result[name]
        staleness = r["staleness_ms"]
        out.append(
            {
                "transport": "GET every 2 s" if name == "polling" else "SSE",
                "clients": r["connections"],
                "server CPU %": r["server_cpu_percent"],
                "projected CPU %": r["projected_cpu_percent"],
                "requests": r["requests"],
                "MB in+out": round((r["bytes_in"] + r["bytes_out"]) / 1e6, 2),
                "staleness p50 ms": staleness["p50_ms"],
                "staleness p99 ms": staleness["p99_ms"],
                "changes seen": staleness["count"],
                "changes published": r["events_published"],
            }
        )
    return out
