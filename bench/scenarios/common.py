"""What the scenarios share: building the simulated population, opening its
streams, publishing while measuring, turning raw counts into figures, and
running the same measurement on Nchan to set beside the hub's."""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench import nchan
from bench.clients import ClientSpec
from bench.loadgen import BenchError, LoadGen
from bench.publisher import Publisher
from bench.stack import JOB_TYPE, PROCESSES_ENV, Stack
from bench.system import core_busy_percent, core_times, cpu_percent, listen_overflows, load_average

MIB = 1024 * 1024
#: How each server is named in the tables.
LABELS = {"hub": "hub", "peer": "sse-starlette", "nchan": "Nchan (memory)", "nchan-redis": "Nchan (Redis)"}


def label(server: str) -> str:
    return LABELS.get(server, server)


def nchan_variants(measure: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """`measure` run on each Nchan variant: {"nchan": {variant: result}}.
    Without Nchan, or when a variant fails, the hub's figures still stand:
    the reason is recorded ("nchan_missing", or "failures": the run's
    failures all the same) instead."""
    why = nchan.missing()
    if os.environ.get(PROCESSES_ENV):
        why = f"{PROCESSES_ENV} is set (--processes): the hub's processes are measured alone"
    if why:
        print(f"   {why}: no Nchan figures", flush=True)
        return {"nchan": {}, "nchan_missing": why}
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for variant in nchan.VARIANTS:
        print(f"   {label(variant)}", flush=True)
        try:
            results[variant] = measure(variant)
        except Exception as exc:
            traceback.print_exc()
            failures[variant] = f"{type(exc).__name__}: {exc}"
    return {"nchan": results, **({"failures": failures} if failures else {})}


def compare_table(rows: list[dict[str, Any]], figures: tuple[str, ...], key: str = "server") -> list[dict[str, Any]]:
    """The rows, the hub's first, then "hub / X" for each other row: each of
    `figures` divided (below 1: the hub has less of it)."""
    hub = rows[0]
    ratios = []
    for other in rows[1:]:
        ratio: dict[str, Any] = {key: f"hub / {other[key]}"}
        for figure in figures:
            a, b = hub.get(figure), other.get(figure)
            numbers = isinstance(a, int | float) and isinstance(b, int | float)
            ratio[figure] = round(a / b, 2) if numbers and b else None
        ratios.append(ratio)
    return rows + ratios


def machine_during(stats: dict[str, Any], cores_before: Any, cores_after: Any) -> dict[str, Any]:
    """What else the machine did in a measurement window: the load
    generators' CPU, each core's busy time, and the load average after it."""
    return {
        "loadgen_cpu_percent": round(100 * stats["cpu_seconds"] / stats["wall_seconds"], 1),
        "core_busy_percent": core_busy_percent(cores_before, cores_after),
        "load_average": load_average(),
    }


def job_path(job_id: str) -> str:
    return f"/api/v1/sse/jobs/{JOB_TYPE}/{job_id}"


def population(
    stack: Stack, connections: int, *, per_job: int = 1, kind: str = "jobs", prefix: str = "j"
) -> tuple[list[ClientSpec], list[tuple[str, str]]]:
    """Clients and the jobs they follow.

    kind "jobs": one user per connection, `per_job` connections per job. A
    job belongs to one user and the hub shows it to nobody else, so the
    connections of one job are that user's (the stack allows it).
    kind "my": one user per connection, each on /my, each with one job
    (the hub only: Nchan has no per-user stream).
    """
    if kind == "my" and stack.nchan is not None:
        raise BenchError("Nchan has no per-user stream")
    job_count = max(1, connections // per_job)
    owners = [f"{prefix}-user-{i:06d}" for i in range(job_count)]
    job_ids = stack.create_jobs(owners, prefix=f"{prefix}job")
    tokens = [stack.token(owner) for owner in owners]
    specs = []
    for i in range(connections):
        j = i % job_count
        path = "/api/v1/sse/jobs/my" if kind == "my" else job_path(job_ids[j])
        specs.append(ClientSpec(path=path, token=tokens[j], jobs=(job_ids[j],), nchan=stack.nchan is not None))
    return specs, list(zip(job_ids, owners, strict=True))


def open_streams(stack: Stack, load: LoadGen, specs: list[ClientSpec], track_events: bool = False) -> dict[str, Any]:
    overflows = listen_overflows()
    opened = load.open_sse(specs, track_events=track_events)
    opened["listen_queue_overflows"] = listen_overflows() - overflows
    if opened["failed"]:
        raise BenchError(f"{opened['failed']} of {len(specs)} streams did not open: {opened['errors']}")
    stack.wait_subscribed(len(specs))
    return opened


def warm_up(stack: Stack, port: int | None = None) -> None:
    """One stream opened and closed before any baseline: the server's first
    request pays for lazy imports and caches that no later one does. `port`:
    one of several server processes (else the stack's one)."""
    port = port or stack.port
    owner = "warm-up-user"
    (job_id,) = stack.create_jobs([owner], prefix=f"warmup{port}-")
    request = (
        f"GET {job_path(job_id)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {stack.token(owner)}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    greeting = b": hi" if stack.nchan is not None else b'"type":"connected"'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        deadline = time.monotonic() + 10
        while greeting not in received and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    time.sleep(0.5)


def publish_and_measure(
    stack: Stack,
    load: LoadGen,
    jobs: list[tuple[str, str]],
    *,
    rate: float,
    duration: float,
    label: str,
    drain_timeout: float = 120.0,
) -> dict[str, Any]:
    """Publishes at `rate` for `duration`, waits until every client has every
    event (or until deliveries stop, or `drain_timeout`: an overloaded server
    drains its backlog after the publisher stops), and reports deliveries,
    latency, losses and the CPU each party used meanwhile."""
    publisher = Publisher(stack.sink, jobs, rate, duration, stack.load_cpus)
    with publisher, stack.profiled(label):
        load.stats(reset=True)
        cores_before, server_before, valkey_before = core_times(), stack.probe.sample(), stack.valkey_probe.sample()
        publisher.start()
        published = publisher.result()
        drained = load.call("expect", drain_timeout + 10, counts=published["counts"], timeout=drain_timeout)
        server_after, valkey_after, cores_after = stack.probe.sample(), stack.valkey_probe.sample(), core_times()
    stats = load.stats(counts=published["counts"])
    figures = delivery_figures(
        stats,
        published,
        started_ns=publisher.started_ns or 0,
        server=(server_before, server_after),
        cores=(cores_before, cores_after),
        complete=all(d["complete"] for d in drained),
    )
    figures["valkey_cpu_percent"] = round(cpu_percent(valkey_before, valkey_after), 1)
    return figures


def cpu_per_delivery_us(cpu_seconds: float, deliveries: int) -> float | None:
    """The server's CPU time per event delivered to one client, in µs."""
    return round(cpu_seconds * 1e6 / deliveries, 2) if deliveries else None


def delivery_figures(
    stats: dict[str, Any],
    published: dict[str, Any],
    *,
    started_ns: int,
    server: tuple[Any, Any],
    cores: tuple[Any, Any],
    complete: bool,
) -> dict[str, Any]:
    before, after = server
    window = after.at - before.at
    server_cpu = after.cpu_seconds - before.cpu_seconds
    deliveries = stats["deliveries"]
    span = ((stats["last_ns"] or started_ns) - started_ns) / 1e9
    accounting = stats.get("accounting", {})
    return {
        "events_published": published["sent"],
        "publish_rate_achieved": round(published["rate_achieved"], 1),
        "publish_failures": published["failures"],
        "publisher_lateness_ms": published["lateness"],
        "publisher_cpu_seconds": round(published["cpu_seconds"], 2),
        "deliveries": deliveries,
        "deliveries_per_s": round(deliveries / span, 1) if span > 0 else None,
        "latency_ms": stats["latency"].summary(),
        "lost": accounting.get("lost"),
        "duplicates": accounting.get("duplicates"),
        "unexpected": accounting.get("unexpected"),
        "connections_with_errors": accounting.get("connections_with_errors"),
        "all_delivered": complete,
        "server_cpu_seconds": round(server_cpu, 2),
        "server_cpu_percent": round(cpu_percent(before, after), 1),
        "deliveries_per_server_cpu_second": round(deliveries / server_cpu) if server_cpu > 0 else None,
        "server_cpu_us_per_delivery": cpu_per_delivery_us(server_cpu, deliveries),
        "requests": stats["requests"],
        "bytes_in": stats["bytes_in"],
        "bytes_out": stats["bytes_out"],
        "server_rss_mib": round(after.rss_bytes / MIB, 1),
        "window_s": round(window, 2),
        "client_errors": stats["errors"],
        "streams_closed_by_server": stats["streams_closed_by_server"],
        "incomplete_sample": stats["incomplete_sample"],
        **machine_during(stats, *cores),
    }
