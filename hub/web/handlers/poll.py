"""Long-poll: the same events and cursors as SSE, one batch per request.

Without a cursor the answer is the current state, at once (in pages of
MAX_BATCH: the answer's cursor then continues the snapshot). With one, the
answer comes as soon as anything follows the cursor, or after
HUB_LONGPOLL_TIMEOUT_SECONDS with no events and the same cursor. A held
poll counts against the user's connection limit like a stream does.

A long-poll client is never dropped for being slow: nothing waits for it
between polls (its subscriber ends with each answer), an answer reads at
most MAX_BATCH events of history, and events that arrive while a poll is
held but do not fit its answer are left in history for the next poll. Its
answers carry every event: progress is not collapsed as for a stream.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from hub.delivery.batch import Batch
from hub.delivery.reasons import CloseReason
from hub.delivery.subscriber import OnSent, Subscriber
from hub.store.events import Event
from hub.store.history import Position
from hub.web.handlers.subscription import SubscriptionHandler

#: Events one long-poll answer holds at most.
MAX_BATCH = 500


class PollHandler(SubscriptionHandler):
    transport = "longpoll"
    max_batch = MAX_BATCH
    # A full queue: the answer is complete, the next poll reads on from history.
    full_reason = CloseReason.ANSWERED

    def requested_cursor(self) -> str | None:
        return self.get_query_argument("cursor", None)

    async def serve(self, subscriber: Subscriber, cursor: Position | None) -> None:
        # One answer's worth is read, never more: the client asks again.
        events = await subscriber.missed(MAX_BATCH)
        live = False
        if cursor is not None and not events and not subscriber.closed:
            batch = Batch(MAX_BATCH)
            await subscriber.replay(batch, MAX_BATCH)
            # Never held past the token's expiry: the next poll gets its 401.
            hold = min(self.streams.longpoll_timeout_seconds, max(0.0, subscriber.expires_at - time.time()))
            await batch.wait(hold)
            events, live = batch.events, True
        gone = subscriber.closed_reason == CloseReason.CLIENT_GONE
        answer = {"events": [_as_json(event) for event in events], "cursor": subscriber.resume_cursor()}
        subscriber.close(CloseReason.ANSWERED)
        if gone:
            return  # nobody to answer
        if events:
            self.streams.metrics.deliveries.sent(self.transport, events, live, resumed=cursor is not None)
        self.write_json(answer)

    def on_sent(self, resumed: bool) -> OnSent:
        return _not_yet  # counted once answered: a client gone meanwhile was sent nothing

    def on_collapsed(self) -> None:
        return None  # every event is answered


def _not_yet(events: Sequence[Event], live: bool) -> None:
    pass


def _as_json(event: Event) -> dict[str, Any]:
    payload = event.payload()
    if event.id is not None:
        payload["id"] = event.id
    return payload
