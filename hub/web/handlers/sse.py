"""Server-Sent Events: a job's stream, or every job of the user (`/my`).

The handler authenticates, admits and reads the first page of what the
client missed while it can still answer an error with JSON. Then it hands
the connection to an SSEWriter and is gone: the subscriber replays the rest
and writes live events through the writer until it closes.
"""

from __future__ import annotations

import logging

from hub.delivery.reasons import CloseReason
from hub.delivery.subscriber import Subscriber
from hub.errors import StoreUnavailable
from hub.store.events import retry_frame
from hub.store.history import REPLAY_PAGE, Position
from hub.web.handlers.base import cors_headers
from hub.web.handlers.subscription import SubscriptionHandler
from hub.web.sse_writer import SSEWriter

log = logging.getLogger("hub.http")

STREAM_HEADERS = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache"),
    # Tells nginx not to buffer the stream.
    ("X-Accel-Buffering", "no"),
]


class SSEHandler(SubscriptionHandler):
    transport = "sse"

    def requested_cursor(self) -> str | None:
        return self.request.headers.get("Last-Event-ID") or self.get_query_argument("lastEventId", None)

    async def serve(self, subscriber: Subscriber, cursor: Position | None) -> None:
        # The first page before the headers: a failure to read it is still an error answer.
        await subscriber.read_ahead(REPLAY_PAGE)
        if subscriber.closed:
            return  # the client went away meanwhile
        writer = SSEWriter(
            self.detach(),
            # As Tornado would: a body without a length is chunked for HTTP/1.1 only.
            chunked=self.request.version == "HTTP/1.1",
            headers=STREAM_HEADERS + cors_headers(self.request.headers.get("Origin"), self.gate.cors_origins),
            first=retry_frame(self.streams.sse_retry_ms) + subscriber.source.greeting().frame,
            subscriber=subscriber,
        )
        self.subscriber = None  # the writer watches the connection from now on
        self.application.log_request(self)  # the handler is done: its request is logged as opened
        try:
            await subscriber.replay(writer, REPLAY_PAGE, clock=self.streams.clock)
        except StoreUnavailable as exc:
            # The head is sent: no error answer is possible. Ended normally,
            # the client comes back with its Last-Event-ID.
            log.warning("%s: replay cut, Redis unavailable: %s", self._request_summary(), exc.__class__.__name__)
            subscriber.close(CloseReason.BUS_RESET)
