"""Request/response clients: long-polls following a job cursor to cursor (or,
on Nchan, message to message), and the old way, a GET of the job's status
every few seconds. All keep one keep-alive connection each, as a browser
would."""

from __future__ import annotations

import asyncio
import json
import random
import time

from bench.clients import ClientSpec, Ledger, Tally, Target, Wire
from bench.wire import Head, ResponseReader, benchmark_update, parse_step, retry_after


class HttpConnection:
    """A keep-alive connection for request/response clients (long-poll,
    status polling), one request at a time."""

    def __init__(self, target: Target, tally: Tally) -> None:
        self.target = target
        self.tally = tally
        self.wire: Wire | None = None
        self._answer: asyncio.Future[tuple[Head, bytes]] | None = None
        self._reader = ResponseReader()
        self._body: list[bytes] = []

    async def get(
        self, path: str, token: str, timeout: float, headers: dict[str, str] | None = None
    ) -> tuple[Head, bytes]:
        if self.wire is None:
            wire = Wire(self)
            await self.target.connect(lambda: wire, timeout)
            self.wire = wire
            self._reader = ResponseReader()
        request = self.target.request(path, token, headers)
        self._answer = asyncio.get_running_loop().create_future()
        self._body = []
        assert self.wire.transport is not None
        self.wire.transport.write(request)
        self.tally.bytes_out += len(request)
        self.tally.requests += 1
        try:
            return await asyncio.wait_for(self._answer, timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        wire, self.wire = self.wire, None
        if wire is not None and wire.transport is not None:
            wire.transport.abort()

    def on_data(self, wire: Wire, data: bytes) -> None:
        if wire is not self.wire:
            return
        self.tally.bytes_in += len(data)
        self._body += self._reader.feed(data)
        if self._reader.complete and self._reader.head is not None:
            answer, head = self._answer, self._reader.head
            self._reader.next_response()
            if head.headers.get("connection", "").lower() == "close":
                self.close()
            if answer is not None and not answer.done():
                answer.set_result((head, b"".join(self._body)))

    def on_lost(self, wire: Wire) -> None:
        if wire is self.wire:
            self.wire = None
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError("connection closed"))
            self._answer.exception()


class LongPollClient:
    """Follows a job with long-polls: each answer's cursor is the next ask."""

    def __init__(self, spec: ClientSpec, target: Target, tally: Tally, hold_timeout: float) -> None:
        self.spec = spec
        self.tally = tally
        self.http = HttpConnection(target, tally)
        self.ledger = Ledger(spec.jobs)
        self.cursor: str | None = None
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stopping = False
        self._hold_timeout = hold_timeout

    async def run(self, deadline: float) -> None:
        while not self.stopping and time.monotonic() < deadline:
            path, headers = self.ask()
            try:
                head, body = await self.http.get(path, self.spec.token, self._hold_timeout, headers)
            except (OSError, TimeoutError, ConnectionError) as exc:
                if self.stopping:
                    return
                self.tally.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            if head.status in self.ASK_AGAIN:
                continue
            if head.status != 200:
                # Refused (busy, or Redis slow): wait as the server asks, with
                # jitter, as a well-behaved client does.
                self.tally.errors[f"http_{head.status}"] += 1
                await asyncio.sleep(random.uniform(0.5, 1.5) * (retry_after(head) or 1.0))
                continue
            self.take(head, body)
            if not self.started.done():
                self.started.set_result(None)

    #: Answers that only mean "nothing yet, ask again".
    ASK_AGAIN: frozenset[int] = frozenset()

    def ask(self) -> tuple[str, dict[str, str]]:
        return self.spec.path + (f"?cursor={self.cursor}" if self.cursor else ""), {}

    def take(self, head: Head, body: bytes) -> None:
        answer = json.loads(body)
        now = time.monotonic_ns()
        for event in answer["events"]:
            parsed = parse_step(event.get("step", "")) if event.get("type") == "job_update" else None
            if parsed is not None and self.ledger.add(event.get("jobId", ""), parsed[0]):
                self.tally.delivery(event["jobId"], parsed[0], parsed[1], now)
        self.cursor = answer["cursor"]

    def stop(self) -> None:
        self.stopping = True
        self.http.close()


class NchanLongPollClient(LongPollClient):
    """Follows a job's channel on Nchan: each answer is one message, and its
    Last-Modified and ETag, sent back as If-Modified-Since and If-None-Match,
    ask for the next. A hold that times out answers 408."""

    ASK_AGAIN = frozenset({408})

    def __init__(self, spec: ClientSpec, target: Target, tally: Tally, hold_timeout: float) -> None:
        super().__init__(spec, target, tally, hold_timeout)
        self.position: dict[str, str] = {}
        # Nchan answers a first ask only with an event; the scenario waits
        # for Nchan's own count of subscribers instead.
        self.started.set_result(None)

    def ask(self) -> tuple[str, dict[str, str]]:
        return self.spec.path, self.position

    def take(self, head: Head, body: bytes) -> None:
        now = time.monotonic_ns()
        update = benchmark_update(body)
        if update is not None and self.ledger.add(update[0], update[1]):
            self.tally.delivery(update[0], update[1], update[2], now)
        self.position = {
            "If-Modified-Since": head.headers.get("last-modified", ""),
            "If-None-Match": head.headers.get("etag", ""),
        }
        self.cursor = self.position["If-Modified-Since"] + " / " + self.position["If-None-Match"]


class StatusPoller:
    """The old way: GET the job's status every `interval` seconds and notice
    when it changed. Staleness is measured for each change it notices."""

    def __init__(self, spec: ClientSpec, target: Target, tally: Tally, interval: float) -> None:
        self.spec = spec
        self.tally = tally
        self.http = HttpConnection(target, tally)
        self.interval = interval
        self.last_seq = 0
        self.changes_seen = 0
        self.changes_skipped = 0  # overwritten before a poll could see them
        self.missed_polls = 0
        self.stopping = False

    async def run(self, deadline: float) -> None:
        next_at = time.monotonic() + random.uniform(0, self.interval)  # spread, as real clients are
        while not self.stopping:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stopping or time.monotonic() >= deadline:
                return
            try:
                head, body = await self.http.get(self.spec.path, self.spec.token, 10.0)
            except (OSError, TimeoutError, ConnectionError) as exc:
                if self.stopping:
                    return
                self.tally.errors[type(exc).__name__] += 1
            else:
                self._on_answer(head, body)
            next_at += self.interval
            while next_at < time.monotonic():  # a late answer skips polls instead of bunching them
                next_at += self.interval
                self.missed_polls += 1

    def _on_answer(self, head: Head, body: bytes) -> None:
        if head.status != 200:
            self.tally.errors[f"http_{head.status}"] += 1
            return
        state = json.loads(body)["data"]
        parsed = parse_step(state.get("step", ""))
        now = time.monotonic_ns()
        if parsed is not None and parsed[0] > self.last_seq:
            self.changes_skipped += parsed[0] - self.last_seq - 1
            self.last_seq = parsed[0]
            self.changes_seen += 1
            self.tally.delivery(self.spec.jobs[0], parsed[0], parsed[1], now)

    def stop(self) -> None:
        self.stopping = True
        self.http.close()
