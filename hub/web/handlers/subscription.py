"""What SSE streams and long-polls share: who is asking, which stream they
follow, from which cursor, admission, and the subscriber that serves them.
The two transports differ only in their writer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from hub.delivery.bus import EventBus
from hub.delivery.clock import Clock
from hub.delivery.connections import ConnectionManager, Lease
from hub.delivery.reasons import CloseReason
from hub.delivery.sources import JobSource, Source, UserSource
from hub.delivery.subscriber import OnSent, Subscriber
from hub.errors import BadRequest, Forbidden, NotFound, Unauthorized
from hub.store.events import parse_cursor
from hub.store.history import History, Position, SnapshotCursor, parse_position
from hub.store.keys import KeySpace
from hub.web.auth import Identity
from hub.web.handlers.base import JOB_ID, BaseHandler, Gate
from hub.web.metrics import HubMetrics

#: The `reason` label of a refused connection, by the error that refused it.
_REJECTED: dict[type[Exception], str] = {Unauthorized: "unauthorized", Forbidden: "forbidden", NotFound: "not_found"}


@dataclass(frozen=True)
class Streams:
    """What the two transports use: admission, the bus, history, and their settings."""

    connections: ConnectionManager
    bus: EventBus
    history: History
    keys: KeySpace
    metrics: HubMetrics
    clock: Clock
    #: HUB_SUBSCRIBER_QUEUE, HUB_SSE_RETRY_MS, HUB_LONGPOLL_TIMEOUT_SECONDS.
    subscriber_queue: int
    sse_retry_ms: int
    longpoll_timeout_seconds: float


class SubscriptionHandler(BaseHandler):
    transport = ""
    #: The most events one write to the client carries.
    max_batch: int | None = None
    #: Why a full queue closes the subscriber (see Subscriber).
    full_reason = CloseReason.SLOW
    subscriber: Subscriber | None = None

    def initialize(self, gate: Gate, streams: Streams) -> None:
        self.streams = streams
        #: The client hung up while its request was on its way (a storm's
        #: clients give up): what is left of the request is not done.
        self.abandoned = False

    async def get(self, job_type: str | None = None, job_id: str | None = None) -> None:
        identity, source, terminal_id = await self._resolve(job_type, job_id)
        raw = self.requested_cursor()
        cursor = parse_position(raw) if raw else None
        if isinstance(cursor, SnapshotCursor) and not isinstance(source, UserSource):
            raise BadRequest("malformed cursor: a snapshot position belongs to /my")
        if terminal_id is not None and isinstance(cursor, tuple) and cursor >= parse_cursor(terminal_id):
            # The client has seen the job's end: 204 says nothing more will
            # come (and tells EventSource not to reconnect).
            self.set_status(204)
            self.finish()
            return
        streams = self.streams
        if self.abandoned:
            return
        lease = await streams.connections.acquire(identity.user, self.transport)
        subscriber = self.subscriber = Subscriber(
            bus=streams.bus,
            history=streams.history,
            source=source,
            start=cursor,
            max_queued=streams.subscriber_queue,
            max_batch=self.max_batch,
            expires_at=identity.expires_at,
            # Neither callback holds the handler: a stream outlives it.
            on_sent=self.on_sent(resumed=cursor is not None),
            on_close=functools.partial(on_closed, streams.metrics, lease),
            on_collapsed=self.on_collapsed(),
            full_reason=self.full_reason,
        )
        if self.abandoned:
            subscriber.close(CloseReason.CLIENT_GONE)
            return
        try:
            await subscriber.open()
            await self.serve(subscriber, cursor)
        except BaseException:
            subscriber.close(CloseReason.CLIENT_GONE)
            raise

    def requested_cursor(self) -> str | None:
        """The client's cursor, as the transport carries it."""
        raise NotImplementedError

    async def serve(self, subscriber: Subscriber, cursor: Position | None) -> None:
        """Sends the client what follows `cursor`, through the transport's writer."""
        raise NotImplementedError

    def on_sent(self, resumed: bool) -> OnSent:
        """What counts the events the client has been sent."""
        return functools.partial(self.streams.metrics.deliveries.sent, self.transport, resumed=resumed)

    def on_collapsed(self) -> Callable[[], None] | None:
        """What counts the queued progress updates a newer one replaced
        (None: the transport's answers carry every event)."""
        return self.streams.metrics.deliveries.collapse_counters[self.transport]

    def on_connection_close(self) -> None:
        # Before a stream's connection is taken over, or while a poll is held.
        self.abandoned = True
        if self.subscriber is not None:
            self.subscriber.close(CloseReason.CLIENT_GONE)

    async def _resolve(self, job_type: str | None, job_id: str | None) -> tuple[Identity, Source, str | None]:
        """Who asks, what they follow, and the id of the job's terminal event
        (if it has ended). Refusals are counted for the operators."""
        try:
            identity = await self.authenticate()
            user = identity.user
            if job_type is None or job_id is None:
                return identity, UserSource(user, self.streams.keys), None
            # Only whose it is: its state is read after subscribing, as it must be.
            job = await self.streams.history.access(job_id) if JOB_ID.match(job_id) else None
            if job is None or job.owner != user or job.job_type != job_type:
                # Never 403: another user's job must look like no job at all.
                raise NotFound("no such job")
        except (Unauthorized, Forbidden, NotFound) as error:
            self.streams.metrics.connections_rejected.labels(_REJECTED[type(error)]).inc()
            raise
        return identity, JobSource(job_id, self.streams.keys), job.terminal_id


def on_closed(metrics: HubMetrics, lease: Lease, reason: str) -> None:
    if reason == CloseReason.SLOW:
        metrics.slow_consumers_disconnected.inc()
    lease.release()
