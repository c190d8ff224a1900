"""The simulated clients: SSE streams, long-polls and status pollers, each a
plain asyncio protocol on a raw socket, and the tally they report into.

Each logical client keeps, per job it follows, the set of sequence numbers
it received, so that losses and duplicates are counted by event and per
connection, not inferred from totals.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.stats import Histogram
from bench.wire import Head, ResponseReader, SseDecoder, benchmark_update, parse_step

#: Linux: pick the source port at connect() time, per destination, instead
#: of at bind() time; otherwise each source address offers only ~28k ports
#: in all, which connection churn uses up.
IP_BIND_ADDRESS_NO_PORT = 24
SOURCE_ADDRESSES = 250


@dataclass(frozen=True)
class ClientSpec:
    """One simulated user's connection: what it asks for and which jobs'
    events it must receive."""

    path: str
    token: str
    jobs: tuple[str, ...]


class Tally:
    """Everything one load-generator process measured."""

    def __init__(self) -> None:
        self.reset()
        #: (job, seq) -> [sent ns, first receipt ns, last receipt ns, receipts]; broadcast only.
        self.events: dict[tuple[str, int], list[int]] | None = None

    def reset(self) -> None:
        self.latency = Histogram()
        self.deliveries = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.requests = 0
        self.keepalives = 0
        self.errors: Counter[str] = Counter()
        self.cpu_start = time.process_time()
        self.wall_start = time.monotonic()

    def delivery(self, job: str, seq: int, sent_ns: int, now_ns: int) -> None:
        self.deliveries += 1
        self.latency.add((now_ns - sent_ns) / 1e6)
        if self.first_ns is None:
            self.first_ns = now_ns
        self.last_ns = now_ns
        if self.events is not None:
            entry = self.events.get((job, seq))
            if entry is None:
                self.events[(job, seq)] = [sent_ns, now_ns, now_ns, 1]
            else:
                entry[2] = now_ns
                entry[3] += 1


class Target:
    """Where the clients connect, and from which loopback addresses: spread
    over many so TIME_WAIT never runs a source address out of ports."""

    def __init__(self, host: str, port: int, worker_index: int) -> None:
        self.host = host
        self.port = port
        self._prefix = f"127.{1 + worker_index}.0."
        self._next = 0

    def source(self) -> str:
        self._next += 1
        return self._prefix + str(1 + self._next % SOURCE_ADDRESSES)

    async def connect(self, factory: Callable[[], asyncio.Protocol], timeout: float) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.source(), 0))
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, (self.host, self.port)), timeout)
            transport, _ = await loop.create_connection(factory, sock=sock)
        except BaseException:
            sock.close()
            raise
        return transport  # type: ignore[return-value]

    def request(self, path: str, token: str, extra: dict[str, str] | None = None) -> bytes:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Authorization: Bearer {token}"]
        lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


class _Wire(asyncio.Protocol):
    """Hands a connection's bytes to its client; one per TCP connection."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.owner.on_data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.on_lost(self)


class SseClient:
    """One EventSource-like stream: connects, parses frames, remembers its
    last id, and can resume with Last-Event-ID after being dropped."""

    def __init__(self, spec: ClientSpec, target: Target, tally: Tally) -> None:
        self.spec = spec
        self.target = target
        self.tally = tally
        self.seqs: dict[str, set[int]] = {job: set() for job in spec.jobs}
        self.foreign = 0  # events of jobs this client does not follow
        self.duplicates = 0
        self.last_id: bytes | None = None
        self.wire: _Wire | None = None
        self.greeted: asyncio.Future[None] | None = None
        self.open = False
        self.closed_by_server = 0
        # The reconnect storm: when this client was dropped, when its new
        # stream answered, and when it had every event sent before that.
        self.dropped_ns: int | None = None
        self.reconnected_ns: int | None = None
        self.caught_up_ns: int | None = None
        self.retries = 0

    async def connect(self, timeout: float, resume: bool = False) -> None:
        """Returns once the stream's `connected` frame arrived: the server
        has subscribed and will deliver every later event."""
        extra = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if resume and self.last_id is not None:
            extra["Last-Event-ID"] = self.last_id.decode()
        request = self.target.request(self.spec.path, self.spec.token, extra)
        self.greeted = asyncio.get_running_loop().create_future()
        self._reader = ResponseReader()
        self._decoder = SseDecoder()
        wire = _Wire(self)
        self.wire = wire
        try:
            transport = await self.target.connect(lambda: wire, timeout)
            transport.write(request)
            self.tally.bytes_out += len(request)
            self.tally.requests += 1
            await asyncio.wait_for(asyncio.shield(self.greeted), timeout)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drops the connection at once, as a network failure would."""
        wire, self.wire = self.wire, None
        self.open = False
        if wire is not None and wire.transport is not None:
            wire.transport.abort()

    def close(self) -> None:
        wire, self.wire = self.wire, None
        self.open = False
        if wire is not None and wire.transport is not None:
            wire.transport.close()

    def on_data(self, wire: _Wire, data: bytes) -> None:
        if wire is not self.wire:
            return  # a connection this client already dropped
        tally = self.tally
        tally.bytes_in += len(data)
        reader = self._reader
        first = reader.head is None
        pieces = reader.feed(data)
        if reader.head is None:
            return
        if reader.head.status != 200:
            self._refused(reader.head, pieces)
            return
        if first and self.dropped_ns is not None and self.reconnected_ns is None:
            self.reconnected_ns = self.caught_up_ns = time.monotonic_ns()
        updates = []
        for piece in pieces:
            for frame in self._decoder.feed(piece):
                if frame.comment:
                    tally.keepalives += 1
                    continue
                if frame.id is not None:
                    self.last_id = frame.id
                update = benchmark_update(frame.data)
                if update is not None:
                    updates.append(update)
                elif b'"type":"connected"' in frame.data and self.greeted and not self.greeted.done():
                    self.open = True
                    self.greeted.set_result(None)
        if updates:
            now = time.monotonic_ns()  # after parsing: when the client has the event
            for job, seq, sent_ns in updates:
                self._record(job, seq, sent_ns, now)

    def _record(self, job: str, seq: int, sent_ns: int, now: int) -> None:
        seqs = self.seqs.get(job)
        if seqs is None:
            self.foreign += 1
            return
        if seq in seqs:
            self.duplicates += 1
        seqs.add(seq)
        self.tally.delivery(job, seq, sent_ns, now)
        if self.reconnected_ns is not None and sent_ns <= self.reconnected_ns:
            self.caught_up_ns = now  # a replayed (or in-flight) event sent before the stream was back

    def _refused(self, head: Head, pieces: list[bytes]) -> None:
        """A non-200 answer: fails the connect with the server's error code."""
        self._error_body = getattr(self, "_error_body", b"") + b"".join(pieces)
        if not self._reader.complete:
            return
        try:
            code = json.loads(self._error_body).get("error", "")
        except ValueError:
            code = ""
        self._error_body = b""
        reason = f"HTTP {head.status} {code}".strip()
        self.tally.errors[reason] += 1
        if self.greeted and not self.greeted.done():
            self.greeted.set_exception(ConnectionError(reason))
            self.greeted.exception()

    def on_lost(self, wire: _Wire) -> None:
        if wire is not self.wire:
            return
        self.wire = None
        if self.open:
            self.closed_by_server += 1
        self.open = False
        if self.greeted and not self.greeted.done():
            self.greeted.set_exception(ConnectionError("closed before the stream started"))
            self.greeted.exception()

    def accounting(self, expected: dict[str, int]) -> dict[str, int]:
        """Received, lost, duplicated and unexpected events of this connection."""
        lost = unexpected = received = 0
        for job, seqs in self.seqs.items():
            want = expected.get(job, 0)
            inside = sum(1 for s in seqs if s <= want)
            lost += want - inside
            unexpected += len(seqs) - inside
            received += len(seqs)
        return {
            "received": received,
            "lost": lost,
            "unexpected": unexpected + self.foreign,
            "duplicates": self.duplicates,
        }


class HttpConnection:
    """A keep-alive connection for request/response clients (long-poll,
    status polling), one request at a time."""

    def __init__(self, target: Target, tally: Tally) -> None:
        self.target = target
        self.tally = tally
        self.wire: _Wire | None = None
        self._answer: asyncio.Future[tuple[Head, bytes]] | None = None
        self._reader = ResponseReader()
        self._body: list[bytes] = []

    async def get(self, path: str, token: str, timeout: float) -> tuple[Head, bytes]:
        if self.wire is None:
            wire = _Wire(self)
            await self.target.connect(lambda: wire, timeout)
            self.wire = wire
            self._reader = ResponseReader()
        request = self.target.request(path, token)
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

    def on_data(self, wire: _Wire, data: bytes) -> None:
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

    def on_lost(self, wire: _Wire) -> None:
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
        self.seqs: dict[str, set[int]] = {job: set() for job in spec.jobs}
        self.foreign = 0
        self.duplicates = 0
        self.cursor: str | None = None
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stopping = False
        self._hold_timeout = hold_timeout

    async def run(self, deadline: float) -> None:
        while not self.stopping and time.monotonic() < deadline:
            query = f"?cursor={self.cursor}" if self.cursor else ""
            try:
                head, body = await self.http.get(self.spec.path + query, self.spec.token, self._hold_timeout)
            except (OSError, TimeoutError, ConnectionError) as exc:
                if self.stopping:
                    return
                self.tally.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            if head.status != 200:
                self.tally.errors[f"http_{head.status}"] += 1
                await asyncio.sleep(0.5)
                continue
            answer = json.loads(body)
            now = time.monotonic_ns()
            for event in answer["events"]:
                parsed = parse_step(event.get("step", "")) if event.get("type") == "job_update" else None
                if parsed is not None:
                    seqs = self.seqs.get(event.get("jobId", ""))
                    if seqs is None:
                        self.foreign += 1
                        continue
                    if parsed[0] in seqs:
                        self.duplicates += 1
                    seqs.add(parsed[0])
                    self.tally.delivery(event["jobId"], parsed[0], parsed[1], now)
            self.cursor = answer["cursor"]
            if not self.started.done():
                self.started.set_result(None)

    def stop(self) -> None:
        self.stopping = True
        self.http.close()

    accounting = SseClient.accounting


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
