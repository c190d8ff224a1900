"""Publishes job events at a fixed rate, the way the actors do: through
`hub.store.journal.Journal`, i.e. the append_event Lua script that records each
change and PUBLISHes it.

Open loop: event k is due at start + k / rate whatever the hub is doing; the
publisher never waits for a delivery. It runs in its own process and sends
the events that are due in one pipeline (one round trip), so its own Python
overhead does not cap the rate. Each event's `step` carries its sequence
number on its job and the monotonic time it was sent, which the clients
compare with the time they parsed it.
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.stats import Histogram
from bench.system import pin
from bench.wire import make_step

#: Events sent in one pipeline at most; more are due only if the publisher fell behind.
MAX_BATCH = 2_000
#: At least this long between pipelines: each round trip costs the publisher
#: (and the core it shares with Redis and the clients) more than an event
#: does, and each event carries its own send time, so batching hides nothing.
TICK = 0.002


def publisher_main(
    conn: Connection,
    redis_url: str,
    namespace: str,
    jobs: list[tuple[str, str]],
    rate: float,
    duration: float,
    cpus: set[int] | None,
) -> None:
    import redis

    from bench.stack import JOB_TYPE
    from hub.runtime.processes import die_with_parent
    from hub.store.journal import Journal
    from hub.store.settings import Settings

    die_with_parent()
    pin(cpus)
    client = redis.Redis.from_url(redis_url)
    pipeline = client.pipeline(transaction=False)
    journal = Journal(pipeline, Settings(redis_url=redis_url, namespace=namespace))
    conn.send({"ready": True})
    if conn.recv() != "go":
        return
    seqs = [0] * len(jobs)
    lateness = Histogram()
    total = int(rate * duration)
    sent = failures = batches = 0
    cpu_start = time.process_time()
    start = last_batch = time.monotonic()
    while sent < total and not conn.poll():
        now = time.monotonic()
        due = min(int((now - start) * rate) + 1, total) - sent
        wait = max(start + sent / rate, last_batch + TICK) - now
        if due <= 0 or wait > 0:
            time.sleep(min(max(wait, 0.0001), 0.005))
            continue
        last_batch = now
        lateness.add(max(0.0, now - (start + sent / rate)) * 1000)  # how far the oldest due event slipped
        for _ in range(min(due, MAX_BATCH)):
            index = sent % len(jobs)
            seqs[index] += 1
            job_id, owner = jobs[index]
            journal.update(job_id, owner, JOB_TYPE, status="active", step=make_step(seqs[index], time.monotonic_ns()))
            sent += 1
        failures += sum(1 for result in pipeline.execute() if not result)
        batches += 1
    elapsed = time.monotonic() - start
    conn.send(
        {
            "counts": {job_id: seqs[i] for i, (job_id, _) in enumerate(jobs)},
            "sent": sent,
            "failures": failures,
            "batches": batches,
            "seconds": elapsed,
            "rate_achieved": sent / elapsed if elapsed > 0 else 0.0,
            "lateness": lateness.summary(),
            "cpu_seconds": time.process_time() - cpu_start,
        }
    )
    client.close()


class Publisher:
    """The scenario's handle on a publisher process."""

    def __init__(
        self,
        redis_url: str,
        namespace: str,
        jobs: list[tuple[str, str]],
        rate: float,
        duration: float,
        cpus: set[int] | None,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, theirs = context.Pipe()
        self.rate = rate
        self.duration = duration
        self._process = context.Process(
            target=publisher_main,
            args=(theirs, redis_url, namespace, jobs, rate, duration, cpus),
            daemon=True,
            name="bench-publisher",
        )
        self._process.start()
        theirs.close()
        self.started_ns: int | None = None
        if not self._conn.poll(30) or not self._conn.recv().get("ready"):
            self.close()
            raise RuntimeError("the publisher did not start")

    def start(self) -> None:
        self.started_ns = time.monotonic_ns()
        self._conn.send("go")

    def stop(self) -> None:
        self._conn.send("stop")

    def result(self, slack: float = 30.0) -> dict[str, Any]:
        """Waits for the publisher to finish (at most its duration plus `slack`)."""
        if not self._conn.poll(self.duration + slack):
            raise RuntimeError("the publisher did not finish in time")
        result: dict[str, Any] = self._conn.recv()
        return result

    def close(self) -> None:
        self._process.join(2)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
