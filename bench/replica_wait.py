"""What HUB_REDIS_WAIT_REPLICAS costs one event: appends timed one after the
other (as one publisher sees them) against a primary with one replica on
this machine, with 0 (no WAIT) and 1 replica to wait for, through a blocking
client (the workers') and an asyncio one (the hub's).

    python -m bench.replica_wait [--rounds 10] [--events 500]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from hub.runtime.embedded import free_port, server_binary
from hub.runtime.processes import stop_process, wait_ready
from hub.store.journal import Journal
from hub.store.settings import Settings

OWNER = "bench"
JOB_TYPE = "bench"
#: The settings compared: no WAIT, and one replica to wait for.
REPLICAS = (0, 1)


def start_server(directory: str, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", ""]
    process = subprocess.Popen([*command, "--repl-diskless-sync-delay", "0", *extra], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        if not wait_ready(lambda: _answers(client), watch=[process], timeout=10):
            raise RuntimeError("valkey-server did not start")
    finally:
        client.close()
    return process, port


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False


def timed(append: Callable[[int], Any], events: int) -> list[float]:
    durations = []
    for step in range(events):
        started = time.perf_counter()
        append(step)
        durations.append(time.perf_counter() - started)
    return durations


async def timed_async(append: Callable[[int], Awaitable[Any]], events: int) -> list[float]:
    durations = []
    for step in range(events):
        started = time.perf_counter()
        await append(step)
        durations.append(time.perf_counter() - started)
    return durations


def summary(durations: list[float]) -> str:
    micro = sorted(d * 1e6 for d in durations)
    p99 = micro[int(len(micro) * 0.99) - 1]
    return f"median {statistics.median(micro):7.1f} µs   mean {statistics.fmean(micro):7.1f} µs   p99 {p99:7.1f} µs"


def journals(url: str, client: Any) -> dict[int, tuple[Journal, str]]:
    """A journal and a job of its own for each number of replicas to wait for."""
    made = {}
    for replicas in REPLICAS:
        settings = Settings(redis_url=url, namespace="w" + uuid.uuid4().hex[:8], redis_wait_replicas=replicas)
        made[replicas] = (Journal(client, settings), uuid.uuid4().hex)
    return made


def measure_blocking(url: str, rounds: int, events: int) -> dict[int, list[float]]:
    client = redis.Redis.from_url(url)
    durations: dict[int, list[float]] = {replicas: [] for replicas in REPLICAS}
    made = journals(url, client)
    for journal, job_id in made.values():
        journal.create(job_id, OWNER, JOB_TYPE, external=True)
    # Rounds take turns, so that a change in the machine's load falls on both alike.
    for _ in range(rounds):
        for replicas, (journal, job_id) in made.items():
            append = functools.partial(_update, journal, job_id)
            durations[replicas] += timed(append, events)
    client.close()
    return durations


async def measure_async(url: str, rounds: int, events: int) -> dict[int, list[float]]:
    client = redis.asyncio.Redis.from_url(url)
    durations: dict[int, list[float]] = {replicas: [] for replicas in REPLICAS}
    made = journals(url, client)
    for journal, job_id in made.values():
        await journal.create(job_id, OWNER, JOB_TYPE, external=True)
    for _ in range(rounds):
        for replicas, (journal, job_id) in made.items():
            append = functools.partial(_update, journal, job_id)
            durations[replicas] += await timed_async(append, events)
    await client.aclose()
    return durations


def _update(journal: Journal, job_id: str, step: int) -> Any:
    return journal.update(job_id, OWNER, JOB_TYPE, status="active", step=str(step))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="turns each setting takes")
    parser.add_argument("--events", type=int, default=500, help="appends per turn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as primary_dir, tempfile.TemporaryDirectory() as replica_dir:
        primary, port = start_server(primary_dir)
        replica, replica_port = start_server(replica_dir, "--replicaof", "127.0.0.1", str(port))
        try:
            replica_client = redis.Redis(port=replica_port)
            wait_ready(lambda: replica_client.info("replication").get("master_link_status") == "up", timeout=10)
            replica_client.close()
            url = f"redis://127.0.0.1:{port}/0"
            measure_blocking(url, 1, 200)  # warm up: scripts loaded, connections made
            blocking = measure_blocking(url, args.rounds, args.events)
            asynchronous = asyncio.run(measure_async(url, args.rounds, args.events))
            for replicas in REPLICAS:
                print(f"wait for {replicas} replica(s), blocking client: {summary(blocking[replicas])}")
                print(f"wait for {replicas} replica(s), asyncio client:  {summary(asynchronous[replicas])}")
        finally:
            stop_process(replica, 5)
            stop_process(primary, 5)


if __name__ == "__main__":
    main()
