"""redis-cost: what one event costs Redis, through the hub's own append path
(`hub.store.journal.Journal.update`, the append_event script), and how many
events a second one primary takes.

No hub runs: publishers write the events of U users with J jobs each, as
the workers do. On a Valkey of its own (its main thread alone on the
server's core, append-only file on, as docs/SCALING.md recommends) or on
the Redis that `--redis-url` names (any HUB_REDIS_URL; its keys under the
run's namespace are removed afterwards, and anyone else's commands
meanwhile are counted too):

- steady: events at a fixed rate, spread evenly over the jobs, until every
  job's history holds HUB_JOB_HISTORY events (1,000), and so, with 10 jobs
  each, every user's holds HUB_USER_HISTORY (10,000): histories as full as
  the defaults let them grow. Redis's commands per event (INFO
  commandstats), its CPU per event (INFO cpu, less its idle CPU), the
  memory per event kept (used_memory_dataset), and one full history of a job and
  of a user (MEMORY USAGE);
- saturation: P publisher processes sending as fast as they can, each
  event still one script call, now with every history trimmed as it grows,
  for `--duration` seconds after a ramp: events/s and the busiest primary's
  main-thread CPU (saturated at ≥ 90 %).
"""

from __future__ import annotations

import contextlib
import math
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from bench.loadgen import BenchError
from bench.params import Params, redacted
from bench.publisher import JournalSink, Publisher
from bench.redis_info import Primaries, Reading, busiest_main_thread_percent, commands_between
from bench.stack import JOB_TYPE
from bench.system import core_busy_percent, core_times, cpu_sets, load_average
from bench.valkey import Valkey
from hub.store.journal import Journal
from hub.store.keys import KeySpace
from hub.store.settings import DEFAULT_JOB_HISTORY, DEFAULT_USER_HISTORY, Settings
from hub.store.topology import Kind, sync_client

NAME = "redis-cost"
#: Redis's CPU when nothing is sent, measured over this long and taken off.
IDLE_SECONDS = 3.0
#: Publishers run this long before the saturation window opens.
RAMP_SECONDS = 2.0
#: "As fast as they can": the publishers never wait for their schedule.
FLAT_OUT = 1e9
#: Publisher processes in the saturation window. Each waits for its
#: pipeline's answers before it sends the next, so one alone leaves Redis
#: idle between batches; on the 2-core machine eight took no more than four.
PUBLISHERS = 4
#: The main thread this busy means Redis is the limit.
SATURATED_PERCENT = 90.0
#: Before reading memory: the append-only file's buffer is written out.
FLUSH_SECONDS = 1.0


def settings(params: Params) -> dict[str, Any]:
    return {
        "users": 2 if params.quick else 4,
        "jobs_per_user": 2 if params.quick else 10,
        "job_history": DEFAULT_JOB_HISTORY,
        "user_history": DEFAULT_USER_HISTORY,
        "rate": params.events_per_second(2_000, 1_000),
        "duration": params.seconds(20, 3),
        "publishers": params.publisher_count(PUBLISHERS, 2),
        "redis": redacted(params.redis_url) if params.redis_url else "a Valkey of its own",
    }


@contextlib.contextmanager
def _redis(url: str | None) -> Iterator[str]:
    """The Redis to measure: the one named, or a Valkey of our own (bench/valkey.py)."""
    if url:
        yield url
        return
    folder = tempfile.mkdtemp(prefix="bench-redis-cost-")
    try:
        with Valkey(folder) as server:
            yield server.url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(params: Params) -> dict[str, Any]:
    chosen = settings(params)
    with _redis(params.redis_url) as url:
        primaries = Primaries(url)
        namespace = f"cost{secrets.token_hex(4)}"
        try:
            if primaries.kind is Kind.CLUSTER:
                raise BenchError("the hub's append path does not run on a Redis Cluster yet: nothing to measure")
            jobs = _create_jobs(primaries.url, namespace, chosen["users"], chosen["jobs_per_user"])
            idle = _idle(primaries)
            steady = _steady(primaries, namespace, jobs, chosen["rate"], idle)
            saturation = _saturate(primaries, namespace, jobs, chosen["publishers"], chosen["duration"])
            result = {
                "settings": chosen,
                "kind": primaries.kind.value,
                "primaries": len(primaries.nodes),
                "server_version": primaries.version(),
                "aof_enabled": _aof(primaries),
                "idle_cpu_percent": round(100 * idle, 2),
                "steady": steady,
                "saturation": saturation,
            }
        finally:
            if params.redis_url:
                primaries.delete_namespace(namespace)
            primaries.close()
    return result


def _create_jobs(url: str, namespace: str, users: int, per_user: int) -> list[tuple[str, str]]:
    client = sync_client(url)
    try:
        pipeline = client.pipeline(transaction=False)
        journal = Journal(pipeline, Settings(redis_url=url, namespace=namespace))
        jobs = [(f"cost{u:04d}x{j:03d}", f"cost-user-{u:04d}") for u in range(users) for j in range(per_user)]
        for job_id, owner in jobs:
            journal.create(job_id, owner, JOB_TYPE)
        pipeline.execute()
    finally:
        client.close()
    return jobs


def _idle(primaries: Primaries) -> float:
    """Redis's CPU seconds per second with nothing sent."""
    before = primaries.read()
    time.sleep(IDLE_SECONDS)
    after = primaries.read()
    return (after.cpu_seconds - before.cpu_seconds) / (after.at - before.at)


def _streams(primaries: Primaries, namespace: str, jobs: list[tuple[str, str]]) -> dict[str, tuple[int, int, int]]:
    """(bytes, entries, streams) of all job streams together, and of all user streams."""
    keys = KeySpace(namespace)
    groups = {
        "job": [keys.job_events(job_id) for job_id, _ in jobs],
        "user": [keys.user_events(owner) for owner in sorted({owner for _, owner in jobs})],
    }
    totals = {}
    for name, names in groups.items():
        size = sum(primaries.memory_usage(key) for key in names)
        entries = sum(int(primaries.keyed.xlen(key)) for key in names)
        totals[name] = (size, entries, len(names))
    return totals


def _steady(
    primaries: Primaries, namespace: str, jobs: list[tuple[str, str]], rate: float, idle: float
) -> dict[str, Any]:
    """Fills every job's history (a job's creation is its first event)."""
    duration = len(jobs) * (DEFAULT_JOB_HISTORY - 1) / rate
    streams_before = _streams(primaries, namespace, jobs)
    with Publisher(JournalSink(primaries.url, namespace), jobs, rate, duration, cpu_sets()[1]) as publisher:
        before = primaries.read()
        publisher.start()
        published = publisher.result()
        after = primaries.read()
    time.sleep(FLUSH_SECONDS)
    memory_after = primaries.read()
    streams_after = _streams(primaries, namespace, jobs)
    events = published["sent"] - published["failures"]
    if events <= 0:
        raise BenchError(f"no event was recorded: {published}")
    commands = commands_between(before, after)
    wall = after.at - before.at
    cpu = after.cpu_seconds - before.cpu_seconds
    per_event = {name: round(calls / events, 3) for name, (calls, _) in sorted(commands.items())}
    return {
        "events": events,
        "rate_achieved": round(published["rate_achieved"], 1),
        "window_s": round(wall, 2),
        "commands_per_event": round(sum(calls for calls, _ in commands.values()) / events, 2),
        "commands_per_event_by_name": per_event,
        "script_us_per_event": _script_us(commands, events),
        "cpu_us_per_event": round(1e6 * cpu / events, 1),
        "cpu_us_per_event_without_idle": round(1e6 * (cpu - idle * wall) / events, 1),
        "cpu_percent": round(100 * cpu / wall, 1),
        "forks": after.forks - before.forks,
        "memory": _memory(before, memory_after, streams_before, streams_after),
        "event_bytes": _event_bytes(primaries, namespace, jobs[0][0]),
    }


def _script_us(commands: dict[str, tuple[int, int]], events: int) -> float | None:
    """Redis's own timing of the append script per event (its inner commands included)."""
    calls = sum(commands.get(name, (0, 0))[0] for name in ("evalsha", "eval"))
    usec = sum(commands.get(name, (0, 0))[1] for name in ("evalsha", "eval"))
    return round(usec / calls, 1) if calls else None


def _memory(
    before: Reading,
    after: Reading,
    streams_before: dict[str, tuple[int, int, int]],
    streams_after: dict[str, tuple[int, int, int]],
) -> dict[str, Any]:
    """Bytes per event kept: in all (the dataset's growth per event that the
    job streams gained: each is kept in its user's stream too; used_memory
    also counts buffers, a replica's among them), in each kind of stream,
    and one stream's whole history."""
    grown = after.dataset_memory - before.dataset_memory
    figures: dict[str, Any] = {
        "used_memory_growth_mib": round((after.used_memory - before.used_memory) / 1024 / 1024, 2),
        "dataset_growth_mib": round(grown / 1024 / 1024, 2),
    }
    for name, (size_after, entries_after, count) in streams_after.items():
        size_before, entries_before, _ = streams_before[name]
        added = entries_after - entries_before
        figures[f"{name}_stream_bytes_per_event"] = round((size_after - size_before) / added, 1) if added else None
        figures[f"{name}_history_events"] = round(entries_after / count)
        figures[f"{name}_history_kib"] = round(size_after / count / 1024, 1)
    kept = streams_after["job"][1] - streams_before["job"][1]
    figures["bytes_per_event"] = round(grown / kept, 1) if kept else None
    return figures


def _event_bytes(primaries: Primaries, namespace: str, job_id: str) -> int | None:
    """The size of one event's fields as stored (its JSON and the rest)."""
    entries = primaries.keyed.xrevrange(KeySpace(namespace).job_events(job_id), count=1)
    if not entries:
        return None
    _, fields = entries[0]
    return sum(len(name) + len(value) for name, value in fields.items())


def _saturate(
    primaries: Primaries,
    namespace: str,
    jobs: list[tuple[str, str]],
    count: int,
    duration: float,
) -> dict[str, Any]:
    """`count` publishers as fast as they can; what Redis took meanwhile."""
    sink = JournalSink(primaries.url, namespace)
    load = cpu_sets()[1]
    with contextlib.ExitStack() as stack:
        # Each its own jobs: every job's events stay in order, as one worker's would.
        publishers = [
            stack.enter_context(Publisher(sink, jobs[i::count], FLAT_OUT, duration + RAMP_SECONDS + 60, load))
            for i in range(count)
        ]
        for publisher in publishers:
            publisher.start()
        time.sleep(RAMP_SECONDS)
        cores_before, before = core_times(), primaries.read()
        time.sleep(duration)
        after, cores_after = primaries.read(), core_times()
        for publisher in publishers:
            publisher.stop()
        results = [publisher.result() for publisher in publishers]
    wall = after.at - before.at
    events = _appends(before, after)
    if events <= 0:
        raise BenchError(f"no event was recorded while saturating: {results}")
    main_thread = busiest_main_thread_percent(before, after)
    # Per event, on the busiest primary's main thread: Redis's cost when events come batched.
    main_us = main_thread / 100 * wall * 1e6 / (events / len(primaries.nodes))
    return {
        "publishers": count,
        "window_s": round(wall, 2),
        "events_per_s": round(events / wall, 1),
        "events_per_s_per_primary": round(events / wall / len(primaries.nodes), 1),
        "main_thread_cpu_percent": main_thread,
        "cpu_percent": round(100 * (after.cpu_seconds - before.cpu_seconds) / wall, 1),
        "saturated": main_thread >= SATURATED_PERCENT,
        "main_thread_us_per_event": round(main_us, 1),
        # What one primary's core would take at that cost: an estimate when not saturated.
        "events_per_s_at_full_core": math.floor(1e6 / main_us),
        "forks": after.forks - before.forks,
        "aof_delayed_fsyncs": after.aof_delayed_fsync - before.aof_delayed_fsync,
        "publish_failures": sum(r["failures"] for r in results),
        "publisher_cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 1),
        "core_busy_percent": core_busy_percent(cores_before, cores_after),
        "load_average": load_average(),
    }


def _appends(before: Reading, after: Reading) -> int:
    """Script calls between two readings: one per event."""
    return sum(after.commands.get(n, (0, 0))[0] - before.commands.get(n, (0, 0))[0] for n in ("evalsha", "eval"))


def _aof(primaries: Primaries) -> bool | None:
    info: dict[str, Any] = primaries.nodes[0].info("persistence")
    value = info.get("aof_enabled")
    return None if value is None else bool(int(value))


def sections(result: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    steady, saturation, memory = result["steady"], result["saturation"], result["steady"]["memory"]
    figures = [
        {
            "primaries": result["primaries"],
            "events (steady)": steady["events"],
            "commands/event": steady["commands_per_event"],
            "script µs/event": steady["script_us_per_event"],
            "CPU µs/event": steady["cpu_us_per_event_without_idle"],
            "bytes/event kept": memory["bytes_per_event"],
            "job stream B/event": memory["job_stream_bytes_per_event"],
            "user stream B/event": memory["user_stream_bytes_per_event"],
            "job history KiB": memory["job_history_kib"],
            "user history KiB": memory["user_history_kib"],
            "max events/s": saturation["events_per_s"],
            "main thread CPU %": saturation["main_thread_cpu_percent"],
            "µs/event batched": saturation["main_thread_us_per_event"],
            "saturated": saturation["saturated"],
        }
    ]
    commands = [{"command": name, "per event": n} for name, n in steady["commands_per_event_by_name"].items()]
    return [("redis-cost", figures), ("redis-cost: commands per event", commands)]
