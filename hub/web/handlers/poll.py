"""Long-poll: the same events and cursors as SSE, one batch per request.

Without a cursor the answer is the current state, at once (in pages of
MAX_BATCH: the answer's cursor then continues the snapshot). With one, the
answer comes as soon as anything follows the cursor, or after
HUB_LONGPOLL_TIMEOUT_SECONDS with no events and the same cursor. A held
poll counts against the user's connection limit like a stream does.
"""

from __future__ import annotations

import time
from typing import Any

from hub.delivery.feed import MAX_BATCH, Feed, Source
from hub.delivery.subscriber import CloseReason
from hub.store.events import Event
from hub.store.history import Position
from hub.web.handlers.subscription import SubscriptionHandler


class PollHandler(SubscriptionHandler):
    transport = "longpoll"

    def requested_cursor(self) -> str | None:
        return self.get_query_argument("cursor", None)

    async def serve(self, source: Source, cursor: Position | None, expires_at: float) -> None:
        feed = self.open_feed(source, cursor)
        try:
            await feed.open()
            # One answer's worth is read, never more: the client asks again.
            events = await feed.backlog(MAX_BATCH)
            replayed = cursor is not None and bool(events)
            if cursor is not None and not events:
                # Never held past the token's expiry: the next poll gets its 401.
                hold = min(self.ctx.settings.longpoll_timeout_seconds, max(0.0, expires_at - time.time()))
                events = await self._wait(feed, hold)
        finally:
            feed.close()
        if feed.subscriber.closed_reason == CloseReason.CLIENT_GONE:
            return  # nobody to answer
        self.count_delivered(events, replayed)
        self.write_json({"events": [_as_json(event) for event in events], "cursor": feed.resume_cursor()})

    async def _wait(self, feed: Feed, hold: float) -> list[Event]:
        first = await feed.next(hold)
        if first is None:
            return []
        # Whatever else has already arrived goes in the same answer.
        return [first, *feed.ready(MAX_BATCH - 1)]


def _as_json(event: Event) -> dict[str, Any]:
    payload = event.payload()
    if event.id is not None:
        payload["id"] = event.id
    return payload
