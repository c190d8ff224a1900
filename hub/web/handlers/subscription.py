"""What SSE streams and long-polls share: who is asking, which stream they
follow, from which cursor, and the feed that serves them. The two transports
differ only in how they write."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from hub.delivery.feed import Feed, JobSource, Source, UserSource
from hub.delivery.subscriber import CloseReason
from hub.errors import BadRequest, Forbidden, NotFound, Unauthorized
from hub.store.events import Event, parse_cursor
from hub.store.history import Position, SnapshotCursor, parse_position
from hub.web.auth import Identity
from hub.web.handlers.base import BaseHandler

#: The `reason` label of a refused connection, by the error that refused it.
_REJECTED: dict[type[Exception], str] = {Unauthorized: "unauthorized", Forbidden: "forbidden", NotFound: "not_found"}


class SubscriptionHandler(BaseHandler):
    transport = ""
    feed: Feed | None = None

    def initialize(self, ctx: Any, **kwargs: Any) -> None:
        super().initialize(ctx)
        self.feed = None

    async def resolve(self, job_type: str | None, job_id: str | None) -> tuple[Identity, Source, str | None]:
        """Who asks, what they follow, and the id of the job's terminal event
        (if it has ended). Refusals are counted for the operators."""
        try:
            identity = await self.authenticate()
            user = identity.user
            if job_type is None or job_id is None:
                return identity, UserSource(user, self.ctx.keys), None
            job = await self.owned_job(job_type, job_id, user)
        except (Unauthorized, Forbidden, NotFound) as error:
            self.ctx.metrics.connections_rejected.labels(_REJECTED[type(error)]).inc()
            raise
        return identity, JobSource(job_id, self.ctx.keys), job.terminal_id

    async def get(self, job_type: str | None = None, job_id: str | None = None) -> None:
        identity, source, terminal_id = await self.resolve(job_type, job_id)
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
        with await self.ctx.connections.acquire(identity.user, self.transport):
            await self.serve(source, cursor, identity.expires_at)

    def requested_cursor(self) -> str | None:
        """The client's cursor, as the transport carries it."""
        raise NotImplementedError

    async def serve(self, source: Source, cursor: Position | None, expires_at: float) -> None:
        """Sends the client what follows `cursor`, until `expires_at` at most."""
        raise NotImplementedError

    def open_feed(self, source: Source, cursor: Position | None) -> Feed:
        self.feed = Feed(
            bus=self.ctx.bus,
            history=self.ctx.history,
            source=source,
            cursor=cursor,
            max_queued=self.ctx.settings.subscriber_queue,
        )
        return self.feed

    def count_delivered(self, events: Sequence[Event], replayed: bool) -> None:
        if not events:
            return
        metrics = self.ctx.metrics
        metrics.delivered[self.transport].inc(len(events))
        if replayed:
            metrics.replayed[self.transport].inc(len(events))
            return
        now = time.time()
        observe = metrics.delivery_seconds.observe
        for event in events:
            if event.published_at is not None:
                observe(max(0.0, now - event.published_at))

    def count_backlog(self, count: int, replayed: bool) -> None:
        """Counts what a client missed and has now been sent: history after
        its cursor (replayed), or the current state (which has no delivery
        time of its own)."""
        metrics = self.ctx.metrics
        metrics.delivered[self.transport].inc(count)
        if replayed:
            metrics.replayed[self.transport].inc(count)

    def count_live(self, events: Sequence[Event]) -> None:
        self.count_delivered(events, replayed=False)

    def on_connection_close(self) -> None:
        if self.feed is not None:
            self.feed.subscriber.close(CloseReason.CLIENT_GONE)
