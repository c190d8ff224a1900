"""Publishes job events at a fixed rate, the way each server's users do: for
the hub (and the sse-starlette peer), the way the actors do, through
`hub.store.journal.Journal`, i.e. the append_event Lua script that records each
change and PUBLISHes it; for Nchan, an HTTP POST of the event's JSON to its
publisher location, pipelined on one keep-alive connection.

Open loop: event k is due at start + k / rate whatever the hub is doing; the
publisher never waits for a delivery. It runs in its own process and sends
the events that are due in one pipeline (one round trip), so its own Python
overhead does not cap the rate. Each event's `step` carries its sequence
number on its job and the monotonic time it was sent, which the clients
compare with the time they parsed it.
"""

from __future__ import annotations

import json
import multiprocessing
import socket
import time
import zlib
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from bench.stats import Histogram
from bench.system import pin
from bench.wire import ResponseReader, make_step

#: Events sent in one pipeline at most; more are due only if the publisher fell behind.
MAX_BATCH = 2_000
#: At least this long between pipelines: each round trip costs the publisher
#: (and the core it shares with Redis and the clients) more than an event
#: does, and each event carries its own send time, so batching hides nothing.
TICK = 0.002
#: POSTs written to one Nchan connection before their answers are read:
#: loopback buffers hold this many both ways, so neither side blocks.
HTTP_WINDOW = 200
#: Connections the publisher POSTs to Nchan over.
HTTP_CONNECTIONS = 8


class Batch(Protocol):
    """Events queued, then sent together; `send` returns how many failed."""

    def add(self, job_id: str, owner: str, step: str) -> None: ...

    def send(self) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class JournalSink:
    """The hub's store: the Journal, one Redis pipeline per batch. A `note`
    goes in every event, to make them as large as an application's."""

    redis_url: str
    namespace: str
    note: str = ""

    def open(self) -> Batch:
        return _JournalBatch(self.redis_url, self.namespace, self.note)


@dataclass(frozen=True)
class NchanSink:
    """Nchan's publisher location on loopback."""

    port: int

    def open(self) -> Batch:
        return _NchanBatch(self.port)


Sink = JournalSink | NchanSink


class _JournalBatch:
    def __init__(self, redis_url: str, namespace: str, note: str = "") -> None:
        from bench.stack import JOB_TYPE
        from hub.store.journal import Journal
        from hub.store.scripts import load_script
        from hub.store.settings import Settings
        from hub.store.topology import is_cluster_client, sync_client

        self.job_type = JOB_TYPE
        self.extra: dict[str, Any] = {"note": note} if note else {}
        self.client = sync_client(redis_url)  # a server's URL, a sentinel set's, or a cluster node's
        self.pipeline: Any = self.client.pipeline(transaction=False)
        if is_cluster_client(self.client):
            self.client.script_load(load_script("append_event.lua"))  # on every primary
            _send_scripts_to_their_keys(self.client, self.pipeline)
        self.journal = Journal(self.pipeline, Settings(redis_url=redis_url, namespace=namespace))

    def add(self, job_id: str, owner: str, step: str) -> None:
        self.journal.update(job_id, owner, self.job_type, status="active", step=step, **self.extra)

    def send(self) -> int:
        return sum(1 for result in self.pipeline.execute() if not result)

    def close(self) -> None:
        self.client.close()


def _send_scripts_to_their_keys(client: Any, pipeline: Any) -> None:
    """Lets a cluster pipeline carry script calls, as a worker's client sends
    them: redis-py's refuses EVALSHA (it could not load a missing script: every
    primary has it already), and would ask a node for each call's keys
    (COMMAND GETKEYS), where the client alone finds the primary of the first."""

    def evalsha(sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        node = client.get_node_from_key(keys_and_args[0])
        return pipeline.execute_command("EVALSHA", sha, numkeys, *keys_and_args, target_nodes=node)

    pipeline.evalsha = evalsha


class _NchanBatch:
    """The same event as the hub's frame carries (its fields and JSON), as
    the body of a POST to the job's channel. Over a few keep-alive
    connections, as an application's HTTP client pool would: nginx answers
    the requests of one connection in turn, and on Redis each waits for its
    round trip. A job's events all take the same connection, so they stay
    in order."""

    def __init__(self, port: int) -> None:
        from bench.stack import JOB_TYPE

        self.job_type = JOB_TYPE
        self.host = f"127.0.0.1:{port}"
        self.conns = [_Pipeline(port) for _ in range(HTTP_CONNECTIONS)]

    def add(self, job_id: str, owner: str, step: str) -> None:
        event = {
            "status": "active",
            "step": step,
            "timestamp": time.time(),
            "type": "job_update",
            "jobId": job_id,
            "jobType": self.job_type,
        }
        body = json.dumps(event, separators=(",", ":")).encode()
        head = f"POST /pub/{job_id} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n\r\n"
        self.conns[zlib.crc32(job_id.encode()) % len(self.conns)].pending.append(head.encode() + body)

    def send(self) -> int:
        failures = 0
        while any(conn.pending for conn in self.conns):
            written = [conn.write(HTTP_WINDOW) for conn in self.conns]  # all in flight at once
            failures += sum(conn.read(count) for conn, count in zip(self.conns, written, strict=True))
        return failures

    def close(self) -> None:
        for conn in self.conns:
            conn.sock.close()


class _Pipeline:
    """One keep-alive connection: requests written together, answers read in order."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = ResponseReader()
        self.pending: list[bytes] = []

    def write(self, limit: int) -> int:
        window, self.pending = self.pending[:limit], self.pending[limit:]
        if window:
            self.sock.sendall(b"".join(window))
        return len(window)

    def read(self, count: int) -> int:
        """Reads `count` answers; returns how many were not a success."""
        failures = answered = 0
        data = b""
        while answered < count:
            self.reader.feed(data)
            data = b""
            if self.reader.complete and self.reader.head is not None:
                failures += self.reader.head.status >= 300
                answered += 1
                self.reader.next_response()  # the next answer may already be buffered
                continue
            data = self.sock.recv(262_144)
            if not data:
                raise ConnectionError("Nchan closed a publisher connection")
        return failures


def publisher_main(
    conn: Connection,
    sink: Sink,
    jobs: list[tuple[str, str]],
    rate: float,
    duration: float,
    cpus: set[int] | None,
) -> None:
    from hub.runtime.processes import die_with_parent

    die_with_parent()
    pin(cpus)
    batch = sink.open()
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
            batch.add(job_id, owner, make_step(seqs[index], time.monotonic_ns()))
            sent += 1
        failures += batch.send()
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
    batch.close()


class Publisher:
    """The scenario's handle on a publisher process."""

    def __init__(
        self,
        sink: Sink,
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
            args=(theirs, sink, jobs, rate, duration, cpus),
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
