"""redis-cost: what one event costs Redis, through the hub's own append path
(`hub.store.journal.Journal.update`, the append_event script), and how many
events a second its primaries take.

No hub runs: publishers write the events of U users with J jobs each, as
the workers do, with job ids made as the hub makes them (the owner's bucket
first), so that the same run works on a cluster. On a Valkey of its own (its
main thread alone on the server's core, append-only file on, as
docs/SCALING.md recommends), on a local cluster of its own (`--cluster P`:
P primaries, a replica each, bench/cluster.py), or on the Redis that
`--redis-url` names (any HUB_REDIS_URL; its keys under the run's namespace
are removed afterwards, and anyone else's commands meanwhile are counted
too). Every primary gets the same number of users, so the same share of the
events; every figure is read from each primary (INFO) and summed:

- steady: events at a fixed rate per primary, spread evenly over the jobs,
  until every job's history holds HUB_JOB_HISTORY events (1,000), and so,
  with 10 jobs each, every user's holds HUB_USER_HISTORY (10,000): histories
  as full as the defaults let them grow. Redis's commands per event (INFO
  commandstats), its CPU per event (INFO cpu, less its idle CPU), on each
  primary and in all, the replicas' CPU, the memory per event kept
  (used_memory_dataset), and one full history of a job and of a user
  (MEMORY USAGE);
- saturation: P publisher processes sending as fast as they can, each
  event still one script call, now with every history trimmed as it grows,
  for `--duration` seconds after a ramp: events/s and each primary's
  main-thread CPU (saturated at ≥ 90 %).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from bench.cluster import local_cluster
from bench.loadgen import BenchError
from bench.params import Params, redacted
from bench.publisher import JournalSink, Publisher
from bench.redis_info import (
    SCRIPT_CALLS,
    Primaries,
    Reading,
    commands_between,
    main_thread_percents,
    script_calls_between,
)
from bench.stack import JOB_TYPE
from bench.system import core_busy_percent, core_times, cpu_sets, load_average
from bench.valkey import Valkey
from hub.store.buckets import new_job_id
from hub.store.journal import Journal
from hub.store.keys import KeySpace
from hub.store.settings import DEFAULT_JOB_HISTORY, DEFAULT_USER_HISTORY, Settings
from hub.store.topology import sync_client

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
#: Candidate user names tried while giving every primary its users.
USER_CANDIDATES = 100_000


def settings(params: Params, primaries: int) -> dict[str, Any]:
    users_per_primary = 2 if params.quick else 4
    return {
        "users_per_primary": users_per_primary,
        "users": users_per_primary * primaries,
        "jobs_per_user": 2 if params.quick else 10,
        "job_history": DEFAULT_JOB_HISTORY,
        "user_history": DEFAULT_USER_HISTORY,
        "rate": params.events_per_second(2_000 * primaries, 1_000 * primaries),
        "duration": params.seconds(20, 3),
        "publishers": params.publisher_count(PUBLISHERS, 2),
        "redis": _described(params),
    }


def _described(params: Params) -> str:
    if params.redis_url:
        return redacted(params.redis_url)
    if params.cluster:
        return f"a Valkey Cluster of its own: {params.cluster} primaries, a replica each"
    return "a Valkey of its own" + (", and a replica" if params.replica else "")


@contextlib.contextmanager
def _redis(params: Params) -> Iterator[str]:
    """The Redis to measure: the one named, a cluster of our own
    (bench/cluster.py), or a Valkey of our own (bench/valkey.py), with a
    replica if asked."""
    if params.redis_url:
        yield params.redis_url
        return
    if params.cluster:
        with local_cluster(params.cluster) as url:
            yield url
        return
    folder = tempfile.mkdtemp(prefix="bench-redis-cost-")
    try:
        with Valkey(os.path.join(folder, "primary")) as server, contextlib.ExitStack() as replica:
            if params.replica:
                replica.enter_context(Valkey(os.path.join(folder, "replica"), replica_of=server.port))
            yield server.url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(params: Params) -> dict[str, Any]:
    with _redis(params) as url:
        primaries = Primaries(url)
        chosen = settings(params, len(primaries.nodes))
        namespace = f"cost{secrets.token_hex(4)}"
        try:
            jobs = _create_jobs(primaries, namespace, chosen["users_per_primary"], chosen["jobs_per_user"])
            idle = _idle(primaries)
            steady = _steady(primaries, namespace, jobs, chosen["rate"], idle)
            saturation = _saturate(primaries, namespace, jobs, chosen["publishers"], chosen["duration"])
            result = {
                "settings": chosen,
                "kind": primaries.kind.value,
                "primaries": len(primaries.nodes),
                "replicas": len(primaries.replicas),
                "server_version": primaries.version(),
                "aof_enabled": _aof(primaries),
                "idle_cpu_percent": round(100 * sum(idle.primaries), 2),
                "steady": steady,
                "saturation": saturation,
            }
            if not primaries.still_primaries():  # its events went on to a node not read
                result["failures"] = {"failover": "a primary lost its role during the run: the figures are partial"}
        finally:
            if params.redis_url:
                primaries.delete_namespace(namespace)
            primaries.close()
    return result


def _owners(primaries: Primaries, keys: KeySpace, per_primary: int) -> list[str]:
    """`per_primary` users on each primary: each primary takes the same share of the events."""
    chosen: list[list[str]] = [[] for _ in primaries.nodes]
    for number in range(USER_CANDIDATES):
        owner = f"cost-user-{number:04d}"
        mine = chosen[primaries.primary_of(keys.user_events(owner))]
        if len(mine) < per_primary:
            mine.append(owner)
        if all(len(users) == per_primary for users in chosen):
            return [owner for users in chosen for owner in users]
    raise BenchError("some primary holds none of the users' buckets")


def _create_jobs(primaries: Primaries, namespace: str, per_primary: int, per_user: int) -> list[tuple[str, str]]:
    """(job id, owner) of every job, created as the hub creates them."""
    client = sync_client(primaries.url)
    try:
        # One call each, not a pipeline: a plain client loads the script where it is missing.
        journal = Journal(client, Settings(redis_url=primaries.url, namespace=namespace))
        owners = _owners(primaries, journal.keys, per_primary)
        jobs = [(new_job_id(owner), owner) for owner in owners for _ in range(per_user)]
        for job_id, owner in jobs:
            journal.create(job_id, owner, JOB_TYPE)
    finally:
        client.close()
    return jobs


class Idle:
    """Redis's CPU seconds per second with nothing sent: each primary's, and the replicas' together."""

    def __init__(self, before: Reading, after: Reading) -> None:
        wall = after.at - before.at
        self.primaries = [(b - a) / wall for a, b in zip(before.node_cpu_seconds, after.node_cpu_seconds, strict=True)]
        self.replicas = (after.replica_cpu_seconds - before.replica_cpu_seconds) / wall


def _idle(primaries: Primaries) -> Idle:
    before = primaries.read()
    time.sleep(IDLE_SECONDS)
    return Idle(before, primaries.read())


def _keys(primaries: Primaries, namespace: str) -> KeySpace:
    return KeySpace.for_client(namespace, primaries.keyed)


def _streams(primaries: Primaries, namespace: str, jobs: list[tuple[str, str]]) -> dict[str, tuple[int, int, int]]:
    """(bytes, entries, streams) of all job streams together, and of all user streams."""
    keys = _keys(primaries, namespace)
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
    primaries: Primaries, namespace: str, jobs: list[tuple[str, str]], rate: float, idle: Idle
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
    replica_cpu = after.replica_cpu_seconds - before.replica_cpu_seconds - idle.replicas * wall
    return {
        "events": events,
        "rate_achieved": round(published["rate_achieved"], 1),
        "window_s": round(wall, 2),
        "commands_per_event": round(sum(calls for calls, _ in commands.values()) / events, 2),
        "commands_per_event_by_name": per_event,
        "script_us_per_event": _script_us(commands, events),
        "cpu_us_per_event": round(1e6 * cpu / events, 1),
        "cpu_us_per_event_without_idle": round(1e6 * (cpu - sum(idle.primaries) * wall) / events, 1),
        "by_primary": _steady_by_primary(before, after, idle),
        "replica_cpu_us_per_event": round(1e6 * replica_cpu / events, 1) if primaries.replicas else None,
        "cpu_percent": round(100 * cpu / wall, 1),
        "forks": after.forks - before.forks,
        "memory": _memory(before, memory_after, streams_before, streams_after),
        "event_bytes": _event_bytes(primaries, namespace, jobs[0][0]),
    }


def _steady_by_primary(before: Reading, after: Reading, idle: Idle) -> list[dict[str, Any]]:
    """Each primary's events and CPU per event (less its idle CPU)."""
    wall = after.at - before.at
    rows = []
    for index, events in enumerate(script_calls_between(before, after)):
        cpu = after.node_cpu_seconds[index] - before.node_cpu_seconds[index] - idle.primaries[index] * wall
        rows.append({"events": events, "cpu_us_per_event": round(1e6 * cpu / events, 1) if events else None})
    return rows


def _script_us(commands: dict[str, tuple[int, int]], events: int) -> float | None:
    """Redis's own timing of the append script per event (its inner commands included)."""
    calls = sum(commands.get(name, (0, 0))[0] for name in SCRIPT_CALLS)
    usec = sum(commands.get(name, (0, 0))[1] for name in SCRIPT_CALLS)
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
    entries = primaries.keyed.xrevrange(_keys(primaries, namespace).job_events(job_id), count=1)
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
    """`count` publishers as fast as they can (no more than there are jobs); what Redis took meanwhile."""
    count = min(count, len(jobs))
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
        load_before = load_average()
        cores_before, before = core_times(), primaries.read()
        time.sleep(duration)
        after, cores_after = primaries.read(), core_times()
        for publisher in publishers:
            publisher.stop()
        results = [publisher.result() for publisher in publishers]
    wall = after.at - before.at
    by_node = script_calls_between(before, after)
    events = sum(by_node)
    if events <= 0:
        raise BenchError(f"no event was recorded while saturating: {results}")
    main = main_thread_percents(before, after)
    busiest = max(main)
    # Per event, on each primary's main thread: Redis's cost when events come batched.
    main_us = [round(pct / 100 * wall * 1e6 / n, 1) if n else None for pct, n in zip(main, by_node, strict=True)]
    return {
        "publishers": count,
        "window_s": round(wall, 2),
        "events_per_s": round(events / wall, 1),
        "by_primary": [
            {"events_per_s": round(n / wall, 1), "main_thread_cpu_percent": pct, "main_thread_us_per_event": us}
            for n, pct, us in zip(by_node, main, main_us, strict=True)
        ],
        "main_thread_cpu_percent": busiest,
        "cpu_percent": round(100 * (after.cpu_seconds - before.cpu_seconds) / wall, 1),
        "replica_cpu_percent": round(100 * (after.replica_cpu_seconds - before.replica_cpu_seconds) / wall, 1),
        "saturated": busiest >= SATURATED_PERCENT,
        "main_thread_us_per_event": round(busiest / 100 * wall * 1e6 / (events / len(by_node)), 1),
        # Every primary's main thread on a core of its own, the busiest full:
        # an estimate when not saturated.
        "events_per_s_at_full_core": round(events / wall * 100 / busiest) if busiest else None,
        "forks": after.forks - before.forks,
        "aof_delayed_fsyncs": after.aof_delayed_fsync - before.aof_delayed_fsync,
        "publish_failures": sum(r["failures"] for r in results),
        "publisher_cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 1),
        "core_busy_percent": core_busy_percent(cores_before, cores_after),
        "load_average_before": load_before,
        "load_average": load_average(),
    }


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
            "replicas' CPU µs/event": steady.get("replica_cpu_us_per_event"),
            "bytes/event kept": memory["bytes_per_event"],
            "job stream B/event": memory["job_stream_bytes_per_event"],
            "user stream B/event": memory["user_stream_bytes_per_event"],
            "job history KiB": memory["job_history_kib"],
            "user history KiB": memory["user_history_kib"],
            "max events/s": saturation["events_per_s"],
            "busiest main thread CPU %": saturation["main_thread_cpu_percent"],
            "events/s, a core per primary": saturation["events_per_s_at_full_core"],
            "saturated": saturation["saturated"],
        }
    ]
    primaries = [
        {
            "primary": index,
            "events (steady)": quiet["events"],
            "CPU µs/event": quiet["cpu_us_per_event"],
            "events/s (max)": busy["events_per_s"],
            "main thread CPU %": busy["main_thread_cpu_percent"],
            "µs/event batched": busy["main_thread_us_per_event"],
        }
        for index, (quiet, busy) in enumerate(zip(steady["by_primary"], saturation["by_primary"], strict=True))
    ]
    commands = [{"command": name, "per event": n} for name, n in steady["commands_per_event_by_name"].items()]
    return [
        ("redis-cost", figures),
        ("redis-cost: each primary", primaries),
        ("redis-cost: commands per event", commands),
    ]
