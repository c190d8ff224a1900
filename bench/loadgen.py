"""The load generator: worker processes that hold the client connections,
and the handle the scenarios drive them with.

Several processes, because one may hold only so many sockets (the machine
allows 20,000 open files per process, and `PER_WORKER` stays well below);
all pinned away from the server's core, each measuring its own CPU time so a
saturated load generator shows up in the report instead of passing for a
slow server. Commands and answers travel as dicts over a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import time
import traceback
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from bench.clients import ClientSpec, LongPollClient, SseClient, StatusPoller, Tally, Target
from bench.stats import Histogram
from bench.system import pin, raise_open_files

#: Connections per load-generator process.
PER_WORKER = 5_000
#: Connections one process opens at the same time: the hub listens with
#: Tornado's backlog of 128, and a SYN dropped from a full queue costs its
#: client a one-second retransmit, which would be measured as the server's.
OPEN_CONCURRENCY = 64


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to."""


def worker_main(conn: Connection, index: int, cpus: set[int] | None, host: str, port: int) -> None:
    from hub.processes import die_with_parent

    die_with_parent()  # never outlive the benchmark
    pin(cpus)
    raise_open_files()
    asyncio.run(Worker(conn, Target(host, port, index)).serve())


class Worker:
    def __init__(self, conn: Connection, target: Target) -> None:
        self.conn = conn
        self.target = target
        self.tally = Tally()
        self.streams: list[SseClient] = []
        self.loops: list[LongPollClient | StatusPoller] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._done = asyncio.Event()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._on_command)
        await self._done.wait()
        for task in self._tasks:
            task.cancel()
        for client in self.streams:
            client.abort()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_command(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self._done.set()  # the benchmark is gone
            return
        self._spawn(self._run(message))

    async def _run(self, message: dict[str, Any]) -> None:
        op = message.pop("op")
        try:
            reply = await getattr(self, "op_" + op)(**message)
        except Exception:
            reply = {"error": traceback.format_exc()}
        self.conn.send(reply)

    # -- SSE --------------------------------------------------------------

    async def op_open_sse(self, specs: list[ClientSpec], timeout: float, track_events: bool = False) -> dict[str, Any]:
        if track_events:
            self.tally.events = {}
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)
        errors: Counter[str] = Counter()
        started = time.monotonic()

        async def open_one(client: SseClient) -> bool:
            async with gate:
                try:
                    await client.connect(timeout)
                    return True
                except Exception as exc:
                    errors[str(exc) or type(exc).__name__] += 1
                    return False

        clients = [SseClient(spec, self.target, self.tally) for spec in specs]
        results = await asyncio.gather(*(open_one(c) for c in clients))
        self.streams += clients
        return {
            "opened": sum(results),
            "failed": len(results) - sum(results),
            "errors": dict(errors),
            "seconds": time.monotonic() - started,
        }

    async def op_expect(self, counts: dict[str, int], timeout: float) -> dict[str, Any]:
        """Waits until every client has every event the publisher sent."""
        deadline = time.monotonic() + timeout
        clients = [*self.streams, *self.loops]
        while True:
            missing = sum(1 for c in clients if isinstance(c, (SseClient, LongPollClient)) and not _complete(c, counts))
            if missing == 0 or time.monotonic() > deadline:
                return {"complete": missing == 0, "incomplete_clients": missing}
            await asyncio.sleep(0.05)

    async def op_drop_and_resume(self, timeout: float, attempts: int) -> dict[str, Any]:
        """Drops every stream at once, then each resumes with Last-Event-ID."""
        now = time.monotonic_ns()
        for client in self.streams:
            client.dropped_ns = now
            client.reconnected_ns = client.caught_up_ns = None
            client.abort()
        for client in self.streams:
            self._spawn(self._resume(client, timeout, attempts))
        return {"dropped": len(self.streams), "dropped_ns": now}

    async def _resume(self, client: SseClient, timeout: float, attempts: int) -> None:
        for attempt in range(attempts):
            try:
                await client.connect(timeout, resume=True)
                return
            except Exception as exc:
                client.retries += 1
                self.tally.errors[f"resume: {exc or type(exc).__name__}"] += 1
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))

    async def op_storm_status(self) -> dict[str, Any]:
        back = [c for c in self.streams if c.reconnected_ns is not None]
        return {
            "reconnected": len(back),
            "clients": len(self.streams),
            "retries": sum(c.retries for c in self.streams),
            "last_reconnected_ns": max((c.reconnected_ns or 0 for c in back), default=None),
            "last_caught_up_ns": max((c.caught_up_ns or 0 for c in back), default=None),
        }

    async def op_churn(self, specs: list[ClientSpec], duration: float, timeout: float) -> dict[str, Any]:
        """Each spec is one user opening and closing a stream, over and over:
        a cycle counts once the stream's `connected` frame arrived."""
        deadline = time.monotonic() + duration
        cycles = Counter[str]()
        connect_ms = Histogram()

        async def churn(spec: ClientSpec) -> None:
            while time.monotonic() < deadline:
                client = SseClient(spec, self.target, self.tally)
                started = time.monotonic()
                try:
                    await client.connect(timeout)
                    cycles["ok"] += 1
                    connect_ms.add((time.monotonic() - started) * 1000)
                except Exception as exc:
                    cycles[str(exc) or type(exc).__name__] += 1
                    await asyncio.sleep(0.05)
                finally:
                    client.close()

        started = time.monotonic()
        await asyncio.gather(*(churn(spec) for spec in specs))
        return {"cycles": dict(cycles), "seconds": time.monotonic() - started, "connect": connect_ms.to_dict()}

    # -- long-poll and status polling -----------------------------------

    async def op_start_longpoll(self, specs: list[ClientSpec], duration: float, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + duration
        clients = [LongPollClient(spec, self.target, self.tally, hold_timeout=60.0) for spec in specs]
        self.loops += clients
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def start(client: LongPollClient) -> None:
            async with gate:
                self._spawn(client.run(deadline))
                await asyncio.wait_for(asyncio.shield(client.started), timeout)

        results = await asyncio.gather(*(start(c) for c in clients), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        return {"started": len(clients) - len(failed), "failed": len(failed)}

    async def op_start_polling(self, specs: list[ClientSpec], duration: float, interval: float) -> dict[str, Any]:
        deadline = time.monotonic() + duration
        clients = [StatusPoller(spec, self.target, self.tally, interval) for spec in specs]
        self.loops += clients
        for client in clients:
            self._spawn(client.run(deadline))
        return {"started": len(clients)}

    async def op_stop_loops(self) -> dict[str, Any]:
        for client in self.loops:
            client.stop()
        return {"stopped": len(self.loops)}

    # -- results ------------------------------------------------------------

    async def op_stats(self, counts: dict[str, int] | None = None, reset: bool = False) -> dict[str, Any]:
        tally = self.tally
        reply: dict[str, Any] = {
            "latency": tally.latency.to_dict(),
            "deliveries": tally.deliveries,
            "first_ns": tally.first_ns,
            "last_ns": tally.last_ns,
            "bytes_in": tally.bytes_in,
            "bytes_out": tally.bytes_out,
            "requests": tally.requests,
            "keepalives": tally.keepalives,
            "errors": dict(tally.errors),
            "cpu_seconds": time.process_time() - tally.cpu_start,
            "wall_seconds": time.monotonic() - tally.wall_start,
            "streams_open": sum(1 for c in self.streams if c.open),
            "streams_closed_by_server": sum(c.closed_by_server for c in self.streams),
        }
        if counts is not None:
            totals: Counter[str] = Counter()
            bad_connections = 0
            for client in [*self.streams, *self.loops]:
                if isinstance(client, (SseClient, LongPollClient)):
                    account = client.accounting(counts)
                    totals.update(account)
                    bad_connections += bool(account["lost"] or account["duplicates"] or account["unexpected"])
            reply["accounting"] = {**totals, "connections_with_errors": bad_connections}
        pollers = [c for c in self.loops if isinstance(c, StatusPoller)]
        if pollers:
            reply["polling"] = {
                "changes_seen": sum(p.changes_seen for p in pollers),
                "changes_skipped": sum(p.changes_skipped for p in pollers),
                "missed_polls": sum(p.missed_polls for p in pollers),
            }
        if tally.events is not None:
            reply["events"] = {f"{job}|{seq}": entry for (job, seq), entry in tally.events.items()}
        if reset:
            tally.reset()
        return reply

    async def op_close_all(self) -> dict[str, Any]:
        for client in self.streams:
            client.close()
        for loop_client in self.loops:
            loop_client.stop()
        count = len(self.streams) + len(self.loops)
        self.streams, self.loops = [], []
        return {"closed": count}

    async def op_exit(self) -> dict[str, Any]:
        self._done.set()
        return {}


def _complete(client: SseClient | LongPollClient, counts: dict[str, int]) -> bool:
    return all(len(client.seqs[job]) >= counts.get(job, 0) for job in client.spec.jobs)


class LoadGen:
    """The scenario's side: starts the workers, splits the clients among them,
    and sends every command to all of them at once."""

    def __init__(self, port: int, connections: int, cpus: set[int] | None, host: str = "127.0.0.1") -> None:
        self.count = max(1, math.ceil(connections / PER_WORKER))
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        try:
            for index in range(self.count):
                ours, theirs = context.Pipe()
                process = context.Process(
                    target=worker_main, args=(theirs, index, cpus, host, port), daemon=True, name=f"bench-load-{index}"
                )
                process.start()
                theirs.close()
                self._conns.append(ours)
                self._processes.append(process)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    def split(self, items: list[Any]) -> list[list[Any]]:
        return [items[i :: self.count] for i in range(self.count)]

    def call(
        self, op: str, budget: float, per_worker: list[dict[str, Any]] | None = None, **common: Any
    ) -> list[dict[str, Any]]:
        """Runs `op` on every worker; each must answer within `budget` seconds."""
        payloads = per_worker or [{} for _ in self._conns]
        for conn, payload in zip(self._conns, payloads, strict=True):
            conn.send({"op": op, **common, **payload})
        replies = []
        deadline = time.monotonic() + budget
        for index, conn in enumerate(self._conns):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError(f"load generator {index} did not finish {op!r} within {budget:.0f}s")
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                raise BenchError(f"load generator {index} died during {op!r}") from None
            if "error" in reply:
                raise BenchError(f"load generator {index} failed {op!r}:\n{reply['error']}")
            replies.append(reply)
        return replies

    def open_sse(self, specs: list[ClientSpec], timeout: float = 30.0, track_events: bool = False) -> dict[str, Any]:
        # Generous: connects are paced, so 10,000 of them take a while.
        budget = timeout + len(specs) / 200
        replies = self.call(
            "open_sse",
            budget,
            [{"specs": part} for part in self.split(specs)],
            timeout=timeout,
            track_events=track_events,
        )
        errors: Counter[str] = Counter()
        for reply in replies:
            errors.update(reply["errors"])
        return {
            "opened": sum(r["opened"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "errors": dict(errors),
            "seconds": max(r["seconds"] for r in replies),
        }

    def stats(self, counts: dict[str, int] | None = None, reset: bool = False) -> dict[str, Any]:
        return merge_stats(self.call("stats", 60.0, counts=counts, reset=reset))

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):  # already gone
                conn.send({"op": "exit"})
        for process in self._processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._processes = [], []

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_stats(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """One report for all workers: sums, merged histograms, earliest first
    and latest last delivery."""
    latency = Histogram()
    for reply in replies:
        latency.merge(Histogram.from_dict(reply["latency"]))
    merged: dict[str, Any] = {"latency": latency}
    for key in ("deliveries", "bytes_in", "bytes_out", "requests", "keepalives", "cpu_seconds", "streams_open"):
        merged[key] = sum(r[key] for r in replies)
    merged["streams_closed_by_server"] = sum(r["streams_closed_by_server"] for r in replies)
    merged["wall_seconds"] = max(r["wall_seconds"] for r in replies)
    firsts = [r["first_ns"] for r in replies if r["first_ns"] is not None]
    lasts = [r["last_ns"] for r in replies if r["last_ns"] is not None]
    merged["first_ns"] = min(firsts) if firsts else None
    merged["last_ns"] = max(lasts) if lasts else None
    errors: Counter[str] = Counter()
    for reply in replies:
        errors.update(reply["errors"])
    merged["errors"] = dict(errors)
    for section in ("accounting", "polling"):
        if any(section in r for r in replies):
            total: Counter[str] = Counter()
            for reply in replies:
                total.update(reply.get(section, {}))
            merged[section] = dict(total)
    if any("events" in r for r in replies):
        events: dict[str, list[int]] = {}
        for reply in replies:
            for key, (sent, first, last, count) in reply.get("events", {}).items():
                entry = events.setdefault(key, [sent, first, last, 0])
                entry[1] = min(entry[1], first)
                entry[2] = max(entry[2], last)
                entry[3] += count
        merged["events"] = events
    return merged
