"""Server-Sent Events: a job's stream, or every job of the user (`/my`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tornado.iostream import StreamClosedError

from hub.errors import ClientError, NotFound, Unauthorized
from hub.events import KEEPALIVE_FRAME, Cursor, Event, parse_cursor, retry_frame
from hub.feed import Feed, JobSource, Source, UserSource
from hub.handlers.base import BaseHandler
from hub.subscriber import CloseReason

TRANSPORT = "sse"


class SlowClient(Exception):
    """A write did not complete within the write timeout."""


class StreamHandler(BaseHandler):
    """Shared by both SSE endpoints; subclasses say which stream and greeting."""

    feed: Feed | None = None

    def initialize(self, ctx: Any, **kwargs: Any) -> None:
        super().initialize(ctx)
        self.feed = None

    def prepare(self) -> None:
        # Never compress: a gzip stream holds events back in its buffer.
        self._transforms = []

    def cursor(self) -> Cursor | None:
        raw = self.request.headers.get("Last-Event-ID") or self.get_query_argument("lastEventId", None)
        return parse_cursor(raw) if raw else None

    def count_rejection(self, error: ClientError) -> None:
        if isinstance(error, Unauthorized):
            self.ctx.metrics.connections_rejected.labels("unauthorized").inc()
        elif isinstance(error, NotFound):
            self.ctx.metrics.connections_rejected.labels("not_found").inc()

    async def stream(self, user: str, source: Source, cursor: Cursor | None, greeting: dict[str, Any]) -> None:
        ctx = self.ctx
        with ctx.connections.acquire(user, TRANSPORT):
            self.feed = Feed(
                bus=ctx.bus,
                history=ctx.history,
                source=source,
                cursor=cursor,
                max_queued=ctx.settings.subscriber_queue,
            )
            try:
                backlog = await self.feed.open()
                self.set_header("Content-Type", "text/event-stream; charset=utf-8")
                self.set_header("Cache-Control", "no-cache")
                self.set_header("X-Accel-Buffering", "no")
                opening = retry_frame(ctx.settings.sse_retry_ms) + Event.make(greeting).sse_frame()
                await self._send([opening], [], replayed=cursor is not None)
                await self._send([e.sse_frame() for e in backlog], backlog, replayed=cursor is not None)
                while not self.feed.ended:
                    event = await self.feed.next(ctx.settings.keepalive_seconds)
                    if self.feed.subscriber.closed:
                        self._on_feed_closed(self.feed.subscriber.closed_reason)
                        return
                    if event is None:
                        await self._send([KEEPALIVE_FRAME], [])
                        ctx.metrics.keepalives.inc()
                    else:
                        await self._send([event.sse_frame()], [event])
            except (StreamClosedError, SlowClient):
                self.feed.subscriber.close(CloseReason.CLIENT_GONE)
                return
            finally:
                self.feed.close()
        if not self._finished:
            self.finish()

    def _on_feed_closed(self, reason: str | None) -> None:
        if reason == CloseReason.SLOW:
            self.ctx.metrics.slow_consumers_disconnected.inc()
            self._abort()
        elif reason == CloseReason.CLIENT_GONE:
            self._abort()
        # Bus reset or shutdown: end the response normally; EventSource
        # reconnects with its Last-Event-ID and resumes from history.

    def _abort(self) -> None:
        if self.request.connection is not None:
            self.request.connection.close()  # type: ignore[attr-defined]

    async def _send(self, frames: list[bytes], events: list[Event], replayed: bool = False) -> None:
        if not frames:
            return
        self.write(b"".join(frames))
        try:
            await asyncio.wait_for(self.flush(), self.ctx.settings.write_timeout_seconds)
        except TimeoutError:
            self.ctx.metrics.slow_consumers_disconnected.inc()
            self._abort()
            raise SlowClient() from None
        self._count(events, replayed)

    def _count(self, events: list[Event], replayed: bool) -> None:
        if not events:
            return
        metrics = self.ctx.metrics
        metrics.events_delivered.labels(TRANSPORT).inc(len(events))
        if replayed:
            metrics.events_replayed.labels(TRANSPORT).inc(len(events))
            return
        now = time.time()
        for event in events:
            if event.published_at is not None:
                metrics.delivery_seconds.observe(max(0.0, now - event.published_at))

    def on_connection_close(self) -> None:
        if self.feed is not None:
            self.feed.subscriber.close(CloseReason.CLIENT_GONE)


class JobStreamHandler(StreamHandler):
    async def get(self, job_type: str, job_id: str) -> None:
        try:
            user = self.authenticate()
            job = await self.owned_job(job_type, job_id, user)
        except ClientError as error:
            self.count_rejection(error)
            raise
        cursor = self.cursor()
        if job.terminal_id and cursor is not None and cursor >= parse_cursor(job.terminal_id):
            # The client has seen the end: 204 tells EventSource not to reconnect.
            self.set_status(204)
            self.finish()
            return
        greeting = {"type": "connected", "jobId": job_id, "message": "Connected to job status stream"}
        await self.stream(user, JobSource(job_id, self.ctx.keys), cursor, greeting)


class UserStreamHandler(StreamHandler):
    async def get(self) -> None:
        try:
            user = self.authenticate()
        except ClientError as error:
            self.count_rejection(error)
            raise
        greeting = {"type": "connected", "message": "Connected to your job stream"}
        await self.stream(user, UserSource(user, self.ctx.keys), self.cursor(), greeting)
