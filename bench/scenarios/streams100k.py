"""streams100k: 100,000 SSE streams open at once on one machine, each its
own user on `/my`, spread over several hub processes.

A process holds at most as many connections as its open-file limit allows
(20,000 here), so the crowd is spread over P hub processes, each on its own
port and all on the server's core, and over load-generator processes of
12,500 connections each. Each user has one job; its stream is `/my`.

Reports how long opening them all took; the hubs' resident memory per
connection (summed over the processes, above their baseline after start and
one warm-up stream each); the hubs' CPU over a window in which only
keepalives run; then, with all still open, events published at R per second,
each to a different user picked at random, and their delivery latency
(publish to the client's parse), with every event accounted for: lost,
duplicated or delivered once.
"""

from __future__ import annotations

import random
import time
from typing import Any

from bench import kernel
from bench.clients import ClientSpec
from bench.fleet import Fleet, processes_needed
from bench.loadgen import BenchError, LoadGen
from bench.params import Params
from bench.scenarios.common import MIB, machine_during, open_streams, publish_and_measure, warm_up
from bench.stack import SECRET, TOKEN_TTL
from bench.system import ProcessProbe, core_busy_percent, core_times, cpu_percent, load_average
from bench.tokens import Minter
from hub.runtime.server import LISTEN_BACKLOG
from hub.web.auth import TokenVerifier

NAME = "streams100k"
#: Hub processes for the full run: 16,667 connections each, under the 19,372
#: one can hold with 20,000 open files.
HUB_PROCESSES = 6
#: Connections per load-generator process (8 for 100,000).
CLIENTS_PER_LOADGEN = 12_500
#: After the last connect, time for the hubs to finish setting them up.
SETTLE_SECONDS = 5.0
#: The hubs listen with this backlog; the kernel caps it at somaxconn.
SYSCTLS = {"net.core.somaxconn": LISTEN_BACKLOG, "net.ipv4.tcp_max_syn_backlog": LISTEN_BACKLOG}
MY_STREAM = "/api/v1/sse/jobs/my"
#: The same users get the events in every run.
SEED = 100_000


def settings(params: Params) -> dict[str, Any]:
    connections = params.connection_count(100_000, 600)
    needed = processes_needed(connections)
    processes = params.process_count(max(HUB_PROCESSES, needed), 2)
    if processes < needed:
        raise BenchError(f"{connections:,} connections need {needed} hub processes under this open-file limit")
    return {
        "connections": connections,
        "hub_processes": processes,
        "window": params.seconds(30, 4),
        "rate": params.events_per_second(1_000, 100),
        "duration": params.seconds(30, 3),
        # Quick runs are shorter than the default 15 s keepalive; a 1 s one
        # keeps them exercising it.
        "keepalive_seconds": 1 if params.quick else 15,
    }


def crowd(fleet: Fleet, connections: int) -> tuple[list[ClientSpec], list[tuple[str, str]]]:
    """One user per connection, each with one job, each on `/my` of one hub
    process (in turn); and the (job, owner) pairs."""
    owners = [f"crowd-{i:06d}" for i in range(connections)]
    job_ids = fleet.create_jobs(owners, prefix="crowd")
    minter = Minter(SECRET, TOKEN_TTL)
    TokenVerifier(fleet.settings).verify(minter.token(owners[0]))  # the hub would refuse them all otherwise
    ports = fleet.ports
    specs = [
        ClientSpec(path=MY_STREAM, token=minter.token(owner), jobs=(job_id,), port=ports[i % len(ports)])
        for i, (owner, job_id) in enumerate(zip(owners, job_ids, strict=True))
    ]
    return specs, list(zip(job_ids, owners, strict=True))


def run(params: Params) -> dict[str, Any]:
    chosen = settings(params)
    connections, processes = chosen["connections"], chosen["hub_processes"]
    env = {"HUB_KEEPALIVE_SECONDS": str(chosen["keepalive_seconds"])}
    with kernel.at_least(SYSCTLS) as sysctls, Fleet(processes=processes, connections=connections, env=env) as fleet:
        for port in fleet.ports:
            warm_up(fleet, port)
        specs, jobs = crowd(fleet, connections)
        baseline, machine_before = fleet.probe.sample(), _machine_memory(fleet)
        with LoadGen(fleet.port, connections, fleet.load_cpus, per_worker=CLIENTS_PER_LOADGEN) as load:
            print(f"   opening {connections:,} streams on {processes} hub processes", flush=True)
            opening = _open(fleet, load, specs)
            time.sleep(SETTLE_SECONDS)
            idle = _idle(fleet, load, chosen["window"])
            after = fleet.probe.sample()
            machine_after = _machine_memory(fleet)
            memory = {
                # Both ends of every connection are on this machine, and so are the clients.
                "machine_memory_used_mib": round(machine_before["available"] - machine_after["available"], 1),
                "kernel_slab_growth_mib": round(machine_after["slab"] - machine_before["slab"], 1),
                "kernel_tcp_buffers_mib": kernel.tcp_memory_mib(),
                "valkey_rss_growth_mib": round(machine_after["valkey"] - machine_before["valkey"], 1),
                "loadgen_rss_mib": round(sum(ProcessProbe(pid).rss_bytes() for pid in load.pids) / MIB, 1),
                "hub_rss_each_mib": fleet.hubs.rss_each_mib(),
            }
            # Each event to a different user, in random order (at most one each).
            events = min(connections, int(chosen["rate"] * chosen["duration"]))
            recipients = random.Random(SEED).sample(jobs, events)
            print(f"   publishing {chosen['rate']:,.0f} events/s to random users", flush=True)
            latency = publish_and_measure(
                fleet, load, recipients, rate=chosen["rate"], duration=chosen["duration"], label=NAME
            )
            still = load.stats()
            load.call("close_all", 120)
    grown = after.rss_bytes - baseline.rss_bytes
    return {
        "settings": chosen,
        "connections": connections,
        "hub_processes": processes,
        "sysctls": sysctls,
        **opening,
        "rss_baseline_mib": round(baseline.rss_bytes / MIB, 1),
        "rss_mib": round(after.rss_bytes / MIB, 1),
        "rss_per_connection_kib": round(grown / connections / 1024, 2),
        **memory,
        "idle": idle,
        "latency": latency,
        "streams_open_at_end": still["streams_open"],
        "streams_closed_by_server": still["streams_closed_by_server"],
        **fleet.diagnostics(),
    }


def _machine_memory(fleet: Fleet) -> dict[str, float]:
    return {
        "available": kernel.meminfo_mib("MemAvailable"),
        "slab": kernel.meminfo_mib("Slab"),
        "valkey": fleet.valkey_probe.rss_bytes() / MIB,
    }


def _open(fleet: Fleet, load: LoadGen, specs: list[ClientSpec]) -> dict[str, Any]:
    """Opens every stream; how long it took and what it cost the hubs."""
    cores_before, before, began = core_times(), fleet.probe.sample(), time.monotonic()
    opened = open_streams(fleet, load, specs)
    seconds = time.monotonic() - began
    after, cores_after = fleet.probe.sample(), core_times()
    cpu = after.cpu_seconds - before.cpu_seconds
    return {
        "open_seconds": round(seconds, 1),
        "connects_per_s": round(len(specs) / seconds, 1),
        "listen_queue_overflows_while_opening": opened["listen_queue_overflows"],
        "hub_cpu_ms_per_connect": round(1000 * cpu / len(specs), 2),
        "hub_cpu_percent_while_opening": round(cpu_percent(before, after), 1),
        "core_busy_percent_while_opening": core_busy_percent(cores_before, cores_after),
        "load_average_after_opening": load_average(),
    }


def _idle(fleet: Fleet, load: LoadGen, window: float) -> dict[str, Any]:
    """The hubs' CPU over `window` seconds in which only keepalives run."""
    load.stats(reset=True)
    cores_before, before, valkey_before = core_times(), fleet.probe.sample(), fleet.valkey_probe.sample()
    cpu_before = fleet.hubs.cpu_each()
    time.sleep(window)
    after, valkey_after, cores_after = fleet.probe.sample(), fleet.valkey_probe.sample(), core_times()
    cpu_after = fleet.hubs.cpu_each()
    stats = load.stats()
    wall = after.at - before.at
    return {
        "window_s": round(wall, 1),
        "hub_cpu_percent": round(cpu_percent(before, after), 2),
        "hub_cpu_percent_each": [round(100 * (b - a) / wall, 2) for a, b in zip(cpu_before, cpu_after, strict=True)],
        "valkey_cpu_percent": round(cpu_percent(valkey_before, valkey_after), 2),
        "keepalives_received": stats["keepalives"],
        "streams_open": stats["streams_open"],
        **machine_during(stats, cores_before, cores_after),
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    latency, idle = result["latency"], result["idle"]
    figures = latency["latency_ms"]
    return [
        {
            "connections": result["connections"],
            "hub processes": result["hub_processes"],
            "open s": result["open_seconds"],
            "connects/s": result["connects_per_s"],
            "hub RSS MiB": result["rss_mib"],
            "KiB/connection": result["rss_per_connection_kib"],
            "idle hub CPU %": idle["hub_cpu_percent"],
            "events/s": latency["publish_rate_achieved"],
            "p50 ms": figures["p50_ms"],
            "p99 ms": figures["p99_ms"],
            "max ms": figures["max_ms"],
            "lost": latency["lost"],
            "dup": latency["duplicates"],
            "open at end": result["streams_open_at_end"],
        }
    ]
