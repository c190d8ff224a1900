"""churn: connection setup and teardown.

1. connects/s: C users each open a stream, wait for its `connected` frame
   (the hub has authenticated, taken a slot, subscribed and read the job),
   close it, and start over, for a fixed time.
2. reconnect storm: N streams are dropped at once while events keep flowing;
   every client resumes with Last-Event-ID. Recovery is the time from the
   drop until every client is back and has every event published before its
   stream was back; no event may be lost or come twice.

Both on Nchan too, when installed: there a stream is open once its `: hi`
arrived (Nchan has put the subscriber in its channel; it verifies no token),
and resuming streams send Nchan's own event ids as Last-Event-ID.
"""

from __future__ import annotations

import time
from typing import Any

from bench.loadgen import LoadGen
from bench.params import Params
from bench.publisher import Publisher
from bench.scenarios.common import (
    compare_table,
    label,
    machine_during,
    nchan_variants,
    open_streams,
    population,
    warm_up,
)
from bench.stack import Stack
from bench.stats import Histogram
from bench.system import core_busy_percent, core_times, cpu_percent, listen_overflows, load_average

NAME = "churn"
#: Events flowing before the storm, and at most how long recovery may take.
WARM_SECONDS = 3.0
RECOVERY_LIMIT = 300.0
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


def measure(server: str, chosen: dict[str, Any]) -> dict[str, Any]:
    """Both measurements on `server`, each on a fresh one."""
    return {
        "connects": measure_connects(server, chosen["churn_clients"], chosen["churn_duration"]),
        "storm": measure_storm(server, chosen["storm_connections"], chosen["storm_rate"]),
    }


def measure_connects(server: str, clients: int, duration: float) -> dict[str, Any]:
    with Stack(server, connections=clients) as stack:
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
        "server": server,
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


def measure_storm(server: str, connections: int, rate: float) -> dict[str, Any]:
    with Stack(server, connections=connections) as stack:
        warm_up(stack)
        specs, jobs = population(stack, connections)
        with LoadGen(stack.port, connections, stack.load_cpus) as load:
            open_streams(stack, load, specs)
            budget = WARM_SECONDS + RECOVERY_LIMIT + 10
            publisher = Publisher(stack.sink, jobs, rate, budget, stack.load_cpus)
            with publisher:
                publisher.start()
                time.sleep(WARM_SECONDS)
                with stack.profiled("storm"):
                    overflows = listen_overflows()
                    cores_before, before = core_times(), stack.probe.sample()
                    dropped = load.call("drop_and_resume", 60, timeout=RESUME_TIMEOUT, attempts=RESUME_ATTEMPTS)
                    status, all_back = _wait_reconnected(load, connections)
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
    # Recovery is when the last client was back (and caught up): not reached
    # while some never came back.
    reconnected = [f["last_reconnected_ns"] for f in final if f["last_reconnected_ns"] and all_back]
    caught_up = [f["last_caught_up_ns"] for f in final if f["last_caught_up_ns"] and all_back]
    accounting = stats["accounting"]
    return {
        "server": server,
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


def _wait_reconnected(load: LoadGen, connections: int) -> tuple[str, bool]:
    """Waits until every client is back, at most RECOVERY_LIMIT; a server
    that does not get there is measured all the same (how many came back,
    what they lost, which errors they met)."""
    deadline = time.monotonic() + RECOVERY_LIMIT
    back = 0
    while time.monotonic() < deadline:
        back = sum(s["reconnected"] for s in load.call("storm_status", 30))
        if back >= connections:
            return "all reconnected", True
        time.sleep(0.1)
    return f"{back} of {connections} back after {RECOVERY_LIMIT:.0f} s", False


def run(params: Params) -> dict[str, Any]:
    chosen = settings(params)
    return {"settings": chosen, **measure("hub", chosen), **nchan_variants(lambda server: measure(server, chosen))}


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return table([result, *result.get("nchan", {}).values()])


def table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The connects of each server (the hub first) and the ratios hub / each other; then the storms."""
    connects = compare_table([connects_row(r["connects"]) for r in results], ("connects/s", "connect p50 ms"))
    storm = compare_table([storm_row(r["storm"]) for r in results], ("all back s", "recovered s"))
    return connects + storm


def connects_row(connects: dict[str, Any]) -> dict[str, Any]:
    return {
        "measure": "open+close streams",
        "server": label(connects.get("server", "hub")),
        "clients": connects["clients"],
        "connects/s": connects["connects_per_s"],
        "connect p50 ms": connects["connect_ms"]["p50_ms"],
        "connect p99 ms": connects["connect_ms"]["p99_ms"],
        "failures": sum(connects["failures"].values()),
        "server CPU %": connects["server_cpu_percent"],
    }


def storm_row(storm: dict[str, Any]) -> dict[str, Any]:
    return {
        "measure": "reconnect storm",
        "server": label(storm.get("server", "hub")),
        "clients": storm["connections"],
        "back": storm["reconnected"],
        "all back s": storm["all_reconnected_s"],
        "recovered s": storm["recovery_s"],
        "retries": storm["reconnect_retries"],
        "SYNs dropped": storm["listen_queue_overflows"],
        "lost": storm["lost"],
        "dup": storm["duplicates"],
        "server CPU %": storm["server_cpu_percent"],
    }
