"""The load generator's side of the pipe: one process holding thousands of
simulated clients, running the commands the scenario sends (open streams,
drop them, count what arrived) and answering with what it measured.

Each process is pinned away from the server's core, raises its open-file
limit, and dies with the benchmark.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from bench.clients import ClientSpec, SseClient, Tally, Target
from bench.pollers import LongPollClient, NchanLongPollClient, StatusPoller
from bench.stats import Histogram
from bench.system import pin, raise_open_files

#: Connections one process opens at the same time: the hub listens with
#: Tornado's backlog of 128, and a SYN dropped from a full queue costs its
#: client a one-second retransmit, which would be measured as the server's.
OPEN_CONCURRENCY = 64


def worker_main(conn: Connection, index: int, cpus: set[int] | None, host: str, port: int) -> None:
    from hub.runtime.processes import die_with_parent

    die_with_parent()  # never outlive the benchmark
    pin(cpus)
    raise_open_files()
    asyncio.run(Worker(conn, Target(host, port, index)).serve())


class Worker:
    """One load-generator process: its clients, and the commands (`op_*`) that drive them."""

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

    async def op_expect(self, counts: dict[str, int], timeout: float, quiet: float = 10.0) -> dict[str, Any]:
        """Waits until every client has every event the publisher sent; gives
        up after `quiet` seconds without a delivery (what is missing then is
        lost, not late) or after `timeout` in all."""
        deadline = time.monotonic() + timeout
        clients = [c for c in [*self.streams, *self.loops] if isinstance(c, (SseClient, LongPollClient))]
        seen, progressed = -1, time.monotonic()
        while True:
            incomplete = sum(1 for c in clients if not _complete(c, counts))
            now = time.monotonic()
            if self.tally.deliveries != seen:
                seen, progressed = self.tally.deliveries, now
            if incomplete == 0 or now > deadline or now - progressed > quiet:
                return {"complete": incomplete == 0, "incomplete_clients": incomplete}
            await asyncio.sleep(0.05)

    async def op_drop_and_resume(self, timeout: float, attempts: int) -> dict[str, Any]:
        """Drops every stream at once, then each resumes with Last-Event-ID,
        and from then on also whenever the server ends its stream."""
        now = time.monotonic_ns()
        for client in self.streams:
            client.dropped_ns = now
            client.reconnected_ns = client.caught_up_ns = None
            client.abort()

        def resume(client: SseClient) -> None:
            self._spawn(self._resume(client, timeout, attempts))

        for client in self.streams:
            client.on_server_close = resume
            resume(client)
        return {"dropped": len(self.streams), "dropped_ns": now}

    async def _resume(self, client: SseClient, timeout: float, attempts: int) -> None:
        """Reconnects as a patient browser would: it waits `timeout` for an
        answer, and after a refusal backs off, with jitter, before trying again."""
        for attempt in range(attempts):
            try:
                await client.connect(timeout, resume=True)
                return
            except Exception as exc:
                client.retries += 1
                self.tally.errors[f"resume: {str(exc) or type(exc).__name__}"] += 1
                backoff = max(min(0.25 * 2**attempt, 5.0), client.retry_after)
                await asyncio.sleep(random.uniform(0.5, 1.5) * backoff)
        self.tally.errors["resume: gave up"] += 1

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
        clients = [
            (NchanLongPollClient if spec.nchan else LongPollClient)(spec, self.target, self.tally, hold_timeout=60.0)
            for spec in specs
        ]
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
                    account = client.ledger.accounting(counts)
                    totals.update(account)
                    bad_connections += bool(account["lost"] or account["duplicates"] or account["unexpected"])
            reply["accounting"] = {**totals, "connections_with_errors": bad_connections}
            reply["incomplete_sample"] = [_describe(c, counts) for c in _incomplete(self, counts)[:10]]
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
    return client.ledger.complete(counts)


def _incomplete(worker: Worker, counts: dict[str, int]) -> list[SseClient | LongPollClient]:
    clients = [c for c in [*worker.streams, *worker.loops] if isinstance(c, (SseClient, LongPollClient))]
    return [c for c in clients if not _complete(c, counts)]


def _describe(client: SseClient | LongPollClient, counts: dict[str, int]) -> dict[str, Any]:
    """What an incomplete client knows about itself, to tell a loss from a stall."""
    described: dict[str, Any] = {"path": client.spec.path, "missing": client.ledger.missing(counts)}
    if isinstance(client, SseClient):
        described.update(
            open=client.open,
            closed_by_server=client.closed_by_server,
            retries=client.retries,
            last_id=client.last_id.decode() if client.last_id else None,
        )
    else:
        described["cursor"] = client.cursor
    return described
