"""churn: connection setup and teardown.

1. connects/s: C users each open a stream, wait for its `connected` frame
   (the hub has authenticated, taken a slot, subscribed and read the job),
   close it, and start over, for a fixed time.
2. reconnect storm: N streams are dropped at once while events keep flowing;
   every client resumes with Last-Event-ID. Recovery is the time from the
   drop until every client is back and has every event published before its
   stream was back; no event may be lost or come twice.
"""

from __future__ import annotations

import time
from typing import Any

from bench.loadgen import BenchError, LoadGen
from bench.params import Params
from bench.publisher import Publisher
from bench.scenarios.common import machine_during, open_streams, population, warm_up
from bench.stack import Stack
from bench.stats import Histogram
from bench.system import core_busy_percent, core_times, cpu_percent, listen_overflows, load_average

NAME = "churn"
#: Events flowing before the storm, and at most how long recovery may take.
WARM_SECONDS = 3.0
RECOVERY_LIMIT = 120.0
RESUME_ATTEMPTS = 30
#: How long a resuming client waits for its answer: a browser waits minutes;
#: a short client timeout would only add retries to the storm.
RESUME_TIMEOUT = 60.0


def settings(params: Params) -> dict[str, Any]:
    return {
        "churn_clients": 64 if not params.quick else 16,
        "churn_duration": params.seconds(15, 3),
        "storm_connections": params.connection_count(10_000, 200),
        "storm_rate": params.events_per_second(1_000, 100),
    }


def measure_connects(clients: int, duration: float) -> dict[str, Any]:
    with Stack("hub", connections=clients) as stack:
        warm_up(stack)
        specs, _ = population(stack, clients)
        with LoadGen(stack.port, clients, stack.load_cpus) as load:
            with stack.profiled("connects"):
                overflows = listen_overflows()
                cores_before, before = core_times(), stack.probe.sample()
                parts = [{"specs": part} for part in load.split(specs)]
                replies = load.call("churn", duration + 60, parts, duration=duration, timeout=10.0)
                after, cores_after = stack.probe.sample(), core_times()
                overflows = listen_overflows() - overflows
            stats = load.stats()
    outcomes: dict[str, int] = {}
    connect = Histogram()
    for reply in replies:
        for outcome, count in reply["cycles"].items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
        connect.merge(Histogram.from_dict(reply["connect"]))
    seconds = max(r["seconds"] for r in replies)
    ok = outcomes.get("ok", 0)
    return {
        "clients": clients,
        "duration": duration,
        "connects": ok,
        "connects_per_s": round(ok / seconds, 1),
        "failures": {k: v for k, v in outcomes.items() if k != "ok"},
        "connect_ms": connect.summary(),
        "listen_queue_overflows": overflows,
        "server_cpu_percent": round(cpu_percent(before, after), 1),
        **machine_during(stats, cores_before, cores_after),
        **stack.diagnostics(),
    }


def measure_storm(connections: int, rate: float) -> dict[str, Any]:
    with Stack("hub", connections=connections) as stack:
        warm_up(stack)
        specs, jobs = population(stack, connections)
        with LoadGen(stack.port, connections, stack.load_cpus) as load:
            open_streams(load, specs)
            budget = WARM_SECONDS + RECOVERY_LIMIT + 10
            publisher = Publisher(stack.redis_url, stack.settings.namespace, jobs, rate, budget, stack.load_cpus)
            with publisher:
                publisher.start()
                time.sleep(WARM_SECONDS)
                with stack.profiled("storm"):
                    overflows = listen_overflows()
                    cores_before, before = core_times(), stack.probe.sample()
                    dropped = load.call("drop_and_resume", 60, timeout=RESUME_TIMEOUT, attempts=RESUME_ATTEMPTS)
                    status = _wait_reconnected(load, connections)
                    overflows = listen_overflows() - overflows
                    time.sleep(2.0)  # events keep flowing after everyone is back
                    publisher.stop()
                    published = publisher.result()
                    drained = load.call("expect", 130, counts=published["counts"], timeout=120)
                    after, cores_after = stack.probe.sample(), core_times()
            final = load.call("storm_status", 30)
            stats = load.stats(counts=published["counts"])
            load.call("close_all", 60)
    dropped_ns = min(d["dropped_ns"] for d in dropped)
    reconnected = [f["last_reconnected_ns"] for f in final if f["last_reconnected_ns"]]
    caught_up = [f["last_caught_up_ns"] for f in final if f["last_caught_up_ns"]]
    accounting = stats["accounting"]
    return {
        "connections": connections,
        "rate": rate,
        "events_published": published["sent"],
        "reconnected": sum(f["reconnected"] for f in final),
        "all_reconnected_s": round((max(reconnected) - dropped_ns) / 1e9, 2) if reconnected else None,
        "recovery_s": round((max(caught_up) - dropped_ns) / 1e9, 2) if caught_up else None,
        "reconnect_retries": sum(f["retries"] for f in final),
        # SYNs the kernel dropped because the hub's accept queue (Tornado's
        # default backlog: 128) was full; each costs its client 1 s or more.
        "listen_queue_overflows": overflows,
        "wait_status": status,
        "lost": accounting["lost"],
        "duplicates": accounting["duplicates"],
        "unexpected": accounting["unexpected"],
        "all_delivered": all(d["complete"] for d in drained),
        "client_errors": stats["errors"],
        "streams_closed_by_server": stats["streams_closed_by_server"],
        "incomplete_sample": stats["incomplete_sample"],
        "server_cpu_percent": round(cpu_percent(before, after), 1),
        "core_busy_percent": core_busy_percent(cores_before, cores_after),
        "load_average": load_average(),
        **stack.diagnostics(),
    }


def _wait_reconnected(load: LoadGen, connections: int) -> str:
    deadline = time.monotonic() + RECOVERY_LIMIT
    while time.monotonic() < deadline:
        back = sum(s["reconnected"] for s in load.call("storm_status", 30))
        if back >= connections:
            return "all reconnected"
        time.sleep(0.1)
    raise BenchError(f"the reconnect storm did not recover within {RECOVERY_LIMIT:.0f}s")


def run(params: Params) -> dict[str, Any]:
    chosen = settings(params)
    return {
        "settings": chosen,
        "connects": measure_connects(chosen["churn_clients"], chosen["churn_duration"]),
        "storm": measure_storm(chosen["storm_connections"], chosen["storm_rate"]),
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    connects, storm = result["connects"], result["storm"]
    return [
        {
            "measure": "open+close streams",
            "clients": connects["clients"],
            "connects/s": connects["connects_per_s"],
            "connect p50 ms": connects["connect_ms"]["p50_ms"],
            "connect p99 ms": connects["connect_ms"]["p99_ms"],
            "failures": sum(connects["failures"].values()),
            "server CPU %": connects["server_cpu_percent"],
        },
        {
            "measure": "reconnect storm",
            "clients": storm["connections"],
            "all back s": storm["all_reconnected_s"],
            "recovered s": storm["recovery_s"],
            "retries": storm["reconnect_retries"],
            "SYNs dropped": storm["listen_queue_overflows"],
            "lost": storm["lost"],
            "dup": storm["duplicates"],
            "server CPU %": storm["server_cpu_percent"],
        },
    ]
