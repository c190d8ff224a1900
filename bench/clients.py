"""The simulated stream clients: EventSource-like SSE connections on raw
sockets (a plain asyncio protocol each), the ledger in which each connection
records, per job it follows, the sequence numbers it received (so losses and
duplicates are counted by event and per connection, not inferred from
totals), and the tally a load-generator process reports."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.stats import Histogram
from bench.wire import Head, ResponseReader, SseDecoder, benchmark_update, retry_after

#: Linux: pick the source port at connect() time, per destination, instead
#: of at bind() time; otherwise each source address offers only ~28k ports
#: in all, which connection churn uses up.
IP_BIND_ADDRESS_NO_PORT = 24
SOURCE_ADDRESSES = 250


@dataclass(frozen=True)
class ClientSpec:
    """One simulated user's connection: what it asks for and which jobs'
    events it must receive. `nchan`: the server is Nchan, whose stream opens
    with a `: hi` comment instead of the hub's `connected` frame, and whose
    long-polls follow Last-Modified and ETag instead of a cursor. `port`:
    the server process it connects to, when there are several (else the
    load generator's)."""

    path: str
    token: str
    jobs: tuple[str, ...]
    nchan: bool = False
    port: int | None = None


class Ledger:
    """What one connection received, per job it follows, by sequence number."""

    def __init__(self, jobs: tuple[str, ...]) -> None:
        self.seqs: dict[str, set[int]] = {job: set() for job in jobs}
        self.foreign = 0  # events of jobs the connection does not follow
        self.duplicates = 0

    def add(self, job: str, seq: int) -> bool:
        """Records one event; False if it belongs to a job not followed."""
        seqs = self.seqs.get(job)
        if seqs is None:
            self.foreign += 1
            return False
        if seq in seqs:
            self.duplicates += 1
        seqs.add(seq)
        return True

    def complete(self, expected: dict[str, int]) -> bool:
        return all(len(seqs) >= expected.get(job, 0) for job, seqs in self.seqs.items())

    def missing(self, expected: dict[str, int]) -> dict[str, list[int]]:
        """The sequence numbers of each job that never arrived."""
        gaps = {}
        for job, seqs in self.seqs.items():
            absent = [s for s in range(1, expected.get(job, 0) + 1) if s not in seqs]
            if absent:
                gaps[job] = absent
        return gaps

    def accounting(self, expected: dict[str, int]) -> dict[str, int]:
        """Received, lost, duplicated and unexpected events."""
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

    async def connect(
        self, factory: Callable[[], asyncio.Protocol], timeout: float, port: int | None = None
    ) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.source(), 0))
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, (self.host, port or self.port)), timeout)
            transport, _ = await loop.create_connection(factory, sock=sock)
        except BaseException:
            sock.close()
            raise
        return transport

    def request(self, path: str, token: str, extra: dict[str, str] | None = None, port: int | None = None) -> bytes:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{port or self.port}", f"Authorization: Bearer {token}"]
        lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Wire(asyncio.Protocol):
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
        self.ledger = Ledger(spec.jobs)
        self.last_id: bytes | None = None
        self.wire: Wire | None = None
        self.greeted: asyncio.Future[None] | None = None
        self.open = False
        self.closed_by_server = 0
        # The reconnect storm: when this client was dropped, when its new
        # stream answered, and when it had every event sent before that.
        self.dropped_ns: int | None = None
        self.reconnected_ns: int | None = None
        self.caught_up_ns: int | None = None
        self.retries = 0
        #: Seconds the server's last refusal asked to wait (its Retry-After).
        self.retry_after = 0.0
        #: Called when the server ends an open stream; EventSource would
        #: reconnect with Last-Event-ID, and in the storm so does this client.
        self.on_server_close: Callable[[SseClient], None] | None = None

    async def connect(self, timeout: float, resume: bool = False) -> None:
        """Returns once the stream's `connected` frame arrived: the server
        has subscribed and will deliver every later event."""
        extra = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if resume and self.last_id is not None:
            extra["Last-Event-ID"] = self.last_id.decode()
        request = self.target.request(self.spec.path, self.spec.token, extra, self.spec.port)
        self.greeted = asyncio.get_running_loop().create_future()
        self._reader = ResponseReader()
        self._decoder = SseDecoder()
        self._error_body = b""
        wire = Wire(self)
        self.wire = wire
        try:
            transport = await self.target.connect(lambda: wire, timeout, self.spec.port)
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

    def on_data(self, wire: Wire, data: bytes) -> None:
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
                    if self.spec.nchan and not self.open:
                        self._opened()  # Nchan's `: hi`: the subscriber is in its channel
                    else:
                        tally.keepalives += 1
                    continue
                if frame.id is not None:
                    self.last_id = frame.id
                update = benchmark_update(frame.data)
                if update is not None:
                    updates.append(update)
                elif b'"type":"connected"' in frame.data:
                    self._opened()
        if updates:
            now = time.monotonic_ns()  # after parsing: when the client has the event
            for job, seq, sent_ns in updates:
                self._record(job, seq, sent_ns, now)

    def _opened(self) -> None:
        if self.greeted and not self.greeted.done():
            self.open = True
            self.greeted.set_result(None)

    def _record(self, job: str, seq: int, sent_ns: int, now: int) -> None:
        if not self.ledger.add(job, seq):
            return
        self.tally.delivery(job, seq, sent_ns, now)
        if self.reconnected_ns is not None and sent_ns <= self.reconnected_ns:
            self.caught_up_ns = now  # a replayed (or in-flight) event sent before the stream was back

    def _refused(self, head: Head, pieces: list[bytes]) -> None:
        """A non-200 answer: fails the connect with the server's error code."""
        self._error_body += b"".join(pieces)
        if not self._reader.complete:
            return
        try:
            code = json.loads(self._error_body).get("error", "")
        except ValueError:
            code = ""
        self._error_body = b""
        reason = f"HTTP {head.status} {code}".strip()
        self.tally.errors[reason] += 1
        self.retry_after = retry_after(head)
        if self.greeted and not self.greeted.done():
            self.greeted.set_exception(ConnectionError(reason))
            self.greeted.exception()

    def on_lost(self, wire: Wire) -> None:
        if wire is not self.wire:
            return
        self.wire = None
        was_open, self.open = self.open, False
        if self.greeted and not self.greeted.done():
            self.greeted.set_exception(ConnectionError("closed before the stream started"))
            self.greeted.exception()
        if was_open:
            self.closed_by_server += 1
            if self.on_server_close is not None:
                self.on_server_close(self)
