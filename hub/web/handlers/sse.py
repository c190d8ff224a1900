"""Server-Sent Events: a job's stream, or every job of the user (`/my`)."""

from __future__ import annotations

import asyncio
import random
import time

from tornado.iostream import StreamClosedError

from hub.delivery.feed import Feed, JobSource, Source
from hub.delivery.live import LiveStream
from hub.delivery.subscriber import CloseReason, wake
from hub.store.events import Event, retry_frame
from hub.store.history import REPLAY_PAGE, Position
from hub.web.handlers.subscription import SubscriptionHandler

#: After a shutdown or a Redis reconnect, clients are told to come back within
#: this many ms, spread at random so that thousands do not arrive at once.
RECONNECT_SPREAD_MS = (500, 5_000)


TOKEN_EXPIRED = Event.make(
    {"type": "token_expired", "message": "your token has expired; reconnect with a fresh one to resume"}
)


class SlowClient(Exception):
    """A write did not complete within the write timeout."""


class SSEHandler(SubscriptionHandler):
    transport = "sse"

    def prepare(self) -> None:
        super().prepare()
        # Never compress: a gzip stream holds events back in its buffer.
        self._transforms = []

    def requested_cursor(self) -> str | None:
        return self.request.headers.get("Last-Event-ID") or self.get_query_argument("lastEventId", None)

    async def serve(self, source: Source, cursor: Position | None, expires_at: float) -> None:
        feed = self.open_feed(source, cursor)
        live: LiveStream | None = None
        try:
            await self._replay(feed, cursor)
            if feed.ended:
                reason = CloseReason.ENDED
            elif time.time() >= expires_at:
                reason = CloseReason.TOKEN_EXPIRED  # a stream does not outlive its token
            else:
                # The live phase: the bus writes each event to the connection
                # until the feed closes. This coroutine only waits, on one
                # future: it is one of ten thousand, so it keeps little.
                live = LiveStream(
                    stream=self.request.connection.stream,  # type: ignore[union-attr]
                    # Tornado chunks a response without a length to an HTTP/1.1
                    # request (never HEAD here: streams answer GET only).
                    chunked=self.request.version == "HTTP/1.1",
                    feed=feed,
                    expires_at=expires_at,
                    streams=self.ctx.live_streams,
                    on_delivered=self.count_live,
                )
                live.start()
                while feed.subscriber.closed_reason is None:
                    await feed.subscriber.when_closed()
                reason = feed.subscriber.closed_reason
                live.stop()
            if not await self._on_feed_closed(reason):
                return
        except (StreamClosedError, SlowClient):
            return
        finally:
            if live is not None:
                live.stop()
            feed.close()
        self.finish()

    async def _replay(self, feed: Feed, cursor: Position | None) -> None:
        """Opens the stream: headers, greeting, then what the client missed.
        (Its own coroutine, so that none of it is kept for the live phase.)"""
        await feed.open()
        # The first page before the headers: a failure to read it is still an error answer.
        page = await feed.backlog(REPLAY_PAGE)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        greeting = retry_frame(self.ctx.settings.sse_retry_ms) + self._greeting(feed.source).sse_frame()
        await self._send(greeting)
        # Page by page, each written before the next is read: a client that
        # does not read holds one page here, and is dropped at the write timeout.
        while page and feed.subscriber.closed_reason is None:
            frames, count = b"".join(e.sse_frame() for e in page), len(page)
            page = []  # only the bytes are kept while the client takes them
            await self._send(frames)
            self.count_backlog(count, replayed=cursor is not None)
            page = await feed.backlog(REPLAY_PAGE)
        # The headers are on the wire: a copy kept for the stream's lifetime
        # would be a kilobyte per connection for nothing.
        for name in list(self._headers):
            self.clear_header(name)

    @staticmethod
    def _greeting(source: Source) -> Event:
        if isinstance(source, JobSource):
            return Event.make(
                {"type": "connected", "jobId": source.job_id, "message": "Connected to job status stream"}
            )
        return Event.make({"type": "connected", "message": "Connected to your job stream"})

    async def _on_feed_closed(self, reason: str) -> bool:
        """Ends the stream as `reason` calls for; True if the response is
        still to be finished normally."""
        if reason == CloseReason.ENDED:
            return True
        if reason == CloseReason.TOKEN_EXPIRED:
            await self._send(TOKEN_EXPIRED.sse_frame())
            return True
        if reason == CloseReason.SLOW:
            self.ctx.metrics.slow_consumers_disconnected.inc()
            self._abort()
            return False
        if reason == CloseReason.CLIENT_GONE:
            self._abort()
            return False
        # The bus was reset or the hub is shutting down: end the response
        # normally, so EventSource reconnects with its Last-Event-ID, after
        # a random delay so thousands of clients do not all come at once.
        await self._send(retry_frame(random.randint(*RECONNECT_SPREAD_MS)))
        return True

    def _abort(self) -> None:
        if self.request.connection is not None:
            self.request.connection.close()  # type: ignore[attr-defined]

    async def _send(self, frames: bytes) -> None:
        """A write at the start or the end of a stream (the live phase writes
        through LiveStream): waits until the client has it."""
        if not frames:
            return
        self.write(frames)
        flushed = self.flush()
        if not flushed.done():
            # Wait for the flush or the write timeout, whichever comes first,
            # with a bare future and a timer: asyncio.wait_for would wrap every
            # write of every stream in a task of its own.
            loop = asyncio.get_running_loop()
            settled = loop.create_future()
            flushed.add_done_callback(lambda _: wake(settled))
            timer = loop.call_later(self.ctx.settings.write_timeout_seconds, wake, settled)
            await settled
            timer.cancel()
            if not flushed.done():
                self.ctx.metrics.slow_consumers_disconnected.inc()
                self._abort()
                raise SlowClient()
        flushed.result()  # raises StreamClosedError if the client went away
