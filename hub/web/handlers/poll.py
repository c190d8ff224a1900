"""Long-poll: the same events and cursors as SSE, one batch per request.

Without a cursor the answer is the current state, at once. With one, the
answer comes as soon as anything follows the cursor, or after
HUB_LONGPOLL_TIMEOUT_SECONDS with no events and the same cursor. A held
poll counts against the user's connection limit like a stream does.
"""

from __future__ import annotations

import time
from typing import Any

from hub.delivery.feed import MAX_BATCH, Feed, Source
from hub.delivery.subscriber import CloseReason
from hub.store.events import BEGINNING, Cursor, Event, format_cursor
from hub.web.handlers.subscription import SubscriptionHandler


class PollHandler(SubscriptionHandler):
    transport = "longpoll"

    def requested_cursor(self) -> str | None:
        return self.get_query_argument("cursor", None)

    async def serve(self, source: Source, cursor: Cursor | None, expires_at: float) -> None:
        feed = self.open_feed(source, cursor)
        try:
            events = await feed.open()
            replayed = cursor is not None and bool(events)
            if cursor is not None and not events:
                # Never held past the token's expiry: the next poll gets its 401.
                hold = min(self.ctx.settings.longpoll_timeout_seconds, max(0.0, expires_at - time.time()))
                events = await self._wait(feed, hold)
        finally:
            feed.close()
        if feed.subscriber.closed_reason == CloseReason.CLIENT_GONE:
            return  # nobody to answer
        events = events[:MAX_BATCH]
        self.count_delivered(events, replayed)
        # A user with no events yet gets the cursor of the very beginning.
        next_cursor = _last_cursor(events) or feed.last or BEGINNING
        self.write_json({"events": [_as_json(event) for event in events], "cursor": format_cursor(next_cursor)})

    async def _wait(self, feed: Feed, hold: float) -> list[Event]:
        first = await feed.next(hold)
        if first is None:
            return []
        # Whatever else has already arrived goes in the same answer.
        return [first, *feed.ready(MAX_BATCH - 1)]


def _last_cursor(events: list[Event]) -> Cursor | None:
    cursors = [event.cursor for event in events if event.cursor is not None]
    return max(cursors) if cursors else None


def _as_json(event: Event) -> dict[str, Any]:
    payload = event.payload()
    if event.id is not None:
        payload["id"] = event.id
    return payload
