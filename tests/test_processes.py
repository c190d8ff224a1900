"""HUB_PROCESSES: several web-server processes on one port, watched over by
a parent. Connections spread over them, /metrics shows the whole server
whichever process answers, a killed process comes back while its clients
resume on the others without loss, and SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hub.runtime.server import DRAIN_SECONDS
from hub.runtime.server_group import MAX_EXITS_PER_MINUTE, ServerGroup
from hub.store.journal import Journal
from hub.web.metrics import LATENCY_BUCKETS, MULTIPROCESS_DIR_ENV, BatchedHistogram
from tests.support.http import Response, bearer, read_response, request
from tests.support.jobs import history
from tests.support.process_tree import (
    alive,
    connection_owners,
    environment_of,
    listening_sockets,
    listens,
    live_children,
)
from tests.support.processes import HubProcess, serve_env
from tests.support.resuming import follow
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=90)

TWO = {"HUB_PROCESSES": "2"}
JOB_TYPE = "character"


async def both_listening(hub) -> list[int]:
    """The group's two children, once both listen on the port."""

    def ready() -> list[int] | None:
        children = live_children(hub.pid)
        return children if len(children) == 2 and all(listens(pid, hub.port) for pid in children) else None

    return list(await eventually(ready, timeout=30, interval=0.05))


def samples(text: str) -> dict[str, float]:
    """Every sample of a scrape, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name + "".join(f" {k}={v}" for k, v in sorted(sample.labels.items()))] = sample.value
    return found


async def scrape(hub, children: list[int]) -> tuple[int, dict[str, float]]:
    """One scrape of /metrics, and which child answered it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\n\r\n".encode())
        response = await read_response(reader, writer, timeout=10)
        text = (await response.body()).decode()
        # Kept alive, so still open: the kernel says which process holds it.
        answered_by = connection_owners(hub.port, children)[writer.get_extra_info("sockname")[1]]
    finally:
        writer.close()
    return answered_by, samples(text)


async def scrape_each(hub, children: list[int]) -> dict[int, dict[str, float]]:
    """A scrape answered by each child (connections land where the kernel's
    hash puts them, so it takes a few)."""
    by_child: dict[int, dict[str, float]] = {}
    for _ in range(60):
        pid, found = await scrape(hub, children)
        by_child.setdefault(pid, found)
        if len(by_child) == len(children):
            return by_child
    raise AssertionError(f"60 scrapes were all answered by {sorted(by_child)}")


async def open_job_stream(hub, job_id: str, token: str) -> Response:
    stream = await request(hub.url + f"/api/v1/sse/jobs/{JOB_TYPE}/{job_id}", headers=bearer(token))
    assert stream.status == 200
    while (await stream.frame()).type != "connected":
        pass
    return stream


async def events_until(stream: Response, progress: int) -> int:
    """Reads the stream until the job reports `progress`; the events read."""
    events = 0
    while True:
        frame = await stream.frame()
        assert frame is not None, "the stream ended"
        events += frame.id is not None
        if frame.data.get("progress") == progress:
            return events


async def two_processes_with_jobs(
    hub_process: Callable[..., HubProcess], journal: Journal, count: int
) -> tuple[HubProcess, list[int], Journal, list[tuple[str, str]]]:
    """A server of two processes, both listening, and `count` jobs, each of
    a user of its own: the hub, its children, the journal, (job id, owner)."""
    hub = hub_process(**TWO)
    children = await both_listening(hub)
    jobs = [(f"job{i}", f"user{i}") for i in range(count)]
    for job_id, owner in jobs:
        journal.create(job_id, owner, JOB_TYPE)
    return hub, children, journal, jobs


def client_port(stream: Response) -> int:
    return int(stream.writer.get_extra_info("sockname")[1])


async def test_connections_spread_over_the_processes_and_metrics_show_them_all(
    hub_process, settings, sync_redis, token
):
    # Given a server of two processes and 24 clients, each following a job
    hub, children, journal, jobs = await two_processes_with_jobs(hub_process, Journal(sync_redis, settings), 24)
    streams = await asyncio.gather(*(open_job_stream(hub, job_id, token(owner)) for job_id, owner in jobs))

    # Then the kernel spread them over both processes
    owners = connection_owners(hub.port, children)
    held = Counter(owners[client_port(stream)] for stream in streams)
    print(f"\nstreams per process: {dict(held)}")
    assert set(held) == set(children) and sum(held.values()) == len(jobs)

    # When every job reports three times
    for progress in (10, 20, 30):
        for job_id, owner in jobs:
            journal.update(job_id, owner, JOB_TYPE, status="active", progress=progress)
    received = Counter[int]()  # events the clients got, by the process that sent them
    for stream in streams:
        received[owners[client_port(stream)]] += await events_until(stream, 30)
    print(f"events received from each process: {dict(received)}")

    # Then /metrics shows the whole server, whichever process answers
    async def all_counted() -> bool:
        _, found = await scrape(hub, children)
        return found["hub_events_delivered_total transport=sse"] == sum(received.values())

    await eventually(all_counted)  # each process writes its counts once per turn of its loop
    for pid, found in (await scrape_each(hub, children)).items():
        assert found["hub_connections transport=sse"] == len(jobs), pid
        assert found["hub_connections_opened_total transport=sse"] == len(jobs), pid
        assert found["hub_users_connected"] == len(jobs), pid
        assert found["hub_events_delivered_total transport=sse"] == sum(received.values()), pid
        assert found["hub_event_delivery_seconds_count"] == 3 * len(jobs), pid  # the live ones
    for stream in streams:
        stream.close()


async def test_a_killed_process_comes_back_and_its_clients_resume_without_loss(
    hub_process, settings, sync_redis, token
):
    # Given a server of two processes and 8 clients following a job each,
    # resuming from their last event id whenever their stream drops
    hub, children, journal, jobs = await two_processes_with_jobs(hub_process, Journal(sync_redis, settings), 8)
    followers = [
        asyncio.create_task(follow([hub.url], f"/api/v1/sse/jobs/{JOB_TYPE}/{job_id}", token(owner), timeout=60))
        for job_id, owner in jobs
    ]
    held = Counter(
        (await eventually(lambda: (o := connection_owners(hub.port, children)) and len(o) == len(jobs) and o)).values()
    )
    victim, victim_streams = held.most_common(1)[0]
    for job_id, owner in jobs:
        journal.update(job_id, owner, JOB_TYPE, status="active", progress=10)

    # When one process is killed outright
    victim_sockets = listening_sockets(hub.port, victim)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    await eventually(lambda: not victim_sockets & listening_sockets(hub.port))

    # Then the port keeps answering: the other process takes every connection
    for _ in range(10):
        assert (await request(hub.url + "/healthz")).status == 200
    # and the killed one's clients resume there, missing nothing
    for progress in (20, 30):
        for job_id, owner in jobs:
            journal.update(job_id, owner, JOB_TYPE, status="active", progress=progress)
    for job_id, owner in jobs:
        journal.update(job_id, owner, JOB_TYPE, status="completed", progress=100, result={})
    seen = await asyncio.gather(*followers)
    for (job_id, _), followed in zip(jobs, seen, strict=True):
        every = history(sync_redis, settings, job_id)
        assert followed.ids == every[every.index(followed.ids[0]) :], job_id
        assert followed.final.data["status"] == "completed"
    assert sum(followed.connects > 1 for followed in seen) == victim_streams

    # And a new process takes the killed one's place, and gets connections
    def replaced() -> list[int] | None:
        now = live_children(hub.pid)
        return now if len(now) == 2 and victim not in now and all(listens(pid, hub.port) for pid in now) else None

    children = await eventually(replaced, timeout=30)
    print(f"\nkilled process replaced after {time.monotonic() - killed_at:.2f} s; {victim_streams} streams resumed")
    (newcomer,) = set(children) - {pid for pid in held if pid != victim}
    answered = {(await scrape(hub, children))[0] for _ in range(30)}
    assert newcomer in answered

    # and what the killed process counted as open is gone from /metrics
    # (its clients came back elsewhere, then every stream ended with its job)
    async def none_open() -> bool:
        _, found = await scrape(hub, children)
        return found["hub_connections transport=sse"] == 0 and found["hub_users_connected"] == 0

    await eventually(none_open)
    # while what it counted stays in the server's counters
    _, found = await scrape(hub, children)
    assert found["hub_connections_opened_total transport=sse"] == sum(followed.connects for followed in seen)


async def test_sigterm_drains_every_process_and_the_parent_exits_after_them(hub_process, settings, sync_redis, token):
    # Given a server of two processes, with clients on both
    hub = hub_process(**TWO)
    children = await both_listening(hub)
    metrics_dir = environment_of(children[0])[MULTIPROCESS_DIR_ENV]
    journal = Journal(sync_redis, settings)
    streams: list[Response] = []
    while len(set(connection_owners(hub.port, children).values())) < 2:
        assert len(streams) < 32, "every stream landed on one process"
        job_id, owner = f"job{len(streams)}", f"user{len(streams)}"
        journal.create(job_id, owner, JOB_TYPE)
        streams.append(await open_job_stream(hub, job_id, token(owner)))

    # When the parent gets SIGTERM
    started = time.monotonic()
    hub.process.send_signal(signal.SIGTERM)

    # Then every stream is ended by its process (clients resume elsewhere),
    # the parent exits 0 once its children have, well within the drain time
    for stream in streams:
        await stream.frames_until_end(timeout=DRAIN_SECONDS)
    code = await asyncio.to_thread(hub.process.wait, DRAIN_SECONDS)
    took = time.monotonic() - started
    print(f"\n{len(streams)} streams on 2 processes drained; the parent exited {took:.2f} s after SIGTERM")
    assert code == 0
    assert not [pid for pid in children if alive(pid)]
    assert not os.path.exists(metrics_dir), "the metrics files go with the server"


def test_a_port_another_server_shares_is_refused_in_one_line(hub_process, settings):
    # Given a server of two processes, each holding the port with SO_REUSEPORT
    hub = hub_process(**TWO)
    # When another one starts on the same port
    other = subprocess.run(
        [sys.executable, "-m", "hub", "serve"],
        env={**serve_env(settings, hub.port), **TWO},
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    # Then it stops at once with one line naming the port, and exit code 2
    assert other.returncode == 2, other
    refusal = f"hub: port {hub.port} on 127.0.0.1 is in use (set HUB_PORT to another port)"
    assert other.stderr.decode().strip() == refusal
    assert hub.process.poll() is None, "the server already there runs on"


def test_a_batch_of_observations_counts_as_many_single_ones():
    values = [0.0004, 0.003, 0.003, 0.02, 0.2, 7.0, 30.0]
    single, batched = CollectorRegistry(), CollectorRegistry()
    one_by_one = Histogram("latency", "", buckets=LATENCY_BUCKETS, registry=single)
    for value in values:
        one_by_one.observe(value)
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    for value in values:
        counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
    BatchedHistogram("latency", "", buckets=LATENCY_BUCKETS, registry=batched).observe_counts(counts, sum(values))

    def exposed(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert exposed(batched) == exposed(single)


def test_a_process_that_keeps_dying_is_restarted_with_growing_pauses_then_given_up(tmp_path, caplog):
    # Given a group whose one process exits at once, every time
    group = ServerGroup(
        1, [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), str(tmp_path), restart_delay=0.05
    )
    # When it runs
    with caplog.at_level(logging.INFO, logger="hub.runtime.server_group"):
        code = group.run(threading.Event())
    # Then each exit is logged and followed by a longer pause, until the
    # crash loop stops the server with exit code 1
    pauses = [float(m) for m in re.findall(r"exited with code 3; restarting it in ([0-9.]+) s", caplog.text)]
    assert len(pauses) == MAX_EXITS_PER_MINUTE
    assert pauses == sorted(pauses) and pauses[-1] == 0.05 * 2 ** (MAX_EXITS_PER_MINUTE - 1)
    assert f"exited {MAX_EXITS_PER_MINUTE + 1} times within a minute; stopping" in caplog.text
    assert code == 1
