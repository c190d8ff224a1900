"""One client's view of one stream (a job's, or a user's for `/my`): history
after its cursor, then live events, with no gap and no duplicate.

The order matters: subscribe for live events first, then read history, then
release live events, skipping any that history already supplied. An event
published while history is being read is thus seen twice and sent once.
Both transports use this; they differ only in how they write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hub.delivery.bus import EventBus
from hub.delivery.subscriber import Subscriber
from hub.store.events import BEGINNING, Cursor, Event, parse_cursor
from hub.store.history import CursorState, History
from hub.store.keys import KeySpace

#: Events one long-poll answer or one SSE write batch holds at most.
MAX_BATCH = 500


@dataclass(frozen=True, slots=True)
class JobSource:
    """A job's own stream; it ends with the job's terminal event."""

    job_id: str
    keys: KeySpace
    ends_with_job = True

    @property
    def stream(self) -> str:
        return self.keys.job_events(self.job_id)

    @property
    def channel(self) -> str:
        return self.keys.job_channel(self.job_id)

    async def snapshot(self, history: History) -> tuple[list[Event], Cursor | None]:
        job = await history.job(self.job_id)
        if job is None:
            return [], None
        return [job.initial_status()], parse_cursor(job.last_id) if job.last_id else None

    def reset_event(self) -> Event:
        return Event.make({"type": "reset", "jobId": self.job_id, "message": RESET_MESSAGE})


@dataclass(frozen=True, slots=True)
class UserSource:
    """Every job of one user (`/my`); it never ends by itself."""

    user_id: str
    keys: KeySpace
    ends_with_job = False

    @property
    def stream(self) -> str:
        return self.keys.user_events(self.user_id)

    @property
    def channel(self) -> str:
        return self.keys.user_channel(self.user_id)

    async def snapshot(self, history: History) -> tuple[list[Event], Cursor | None]:
        snapshot = await history.user(self.user_id)
        return snapshot.initial_statuses(), parse_cursor(snapshot.head) if snapshot.head else None

    def reset_event(self) -> Event:
        return Event.make({"type": "reset", "message": RESET_MESSAGE})


RESET_MESSAGE = "events after your cursor are no longer kept; current state follows"

Source = JobSource | UserSource


class Feed:
    __slots__ = ("_bus", "_cursor", "_history", "_subscribed", "ended", "last", "source", "subscriber")

    def __init__(self, *, bus: EventBus, history: History, source: Source, cursor: Cursor | None, max_queued: int):
        self._bus = bus
        self._history = history
        self.source = source
        self._cursor = cursor
        self.subscriber = Subscriber(max_queued)
        self._subscribed = False
        #: The newest cursor handed out; live events at or before it are duplicates.
        self.last: Cursor | None = cursor
        self.ended = False

    async def open(self) -> list[Event]:
        """Subscribes, then returns what the client has not seen yet from history."""
        await self._bus.subscribe(self.source.channel, self.subscriber)
        self._subscribed = True
        if self._cursor is None:
            events, head = await self.source.snapshot(self._history)
        elif await self._history.cursor_state(self.source.stream, self._cursor) == CursorState.EVICTED:
            events, head = await self.source.snapshot(self._history)
            events.insert(0, self.source.reset_event())
        else:
            return self._track(await self._history.after(self.source.stream, self._cursor))
        # The state as of `head`: what follows it is live. A user without
        # any event yet starts from the very beginning.
        self.last = head or BEGINNING
        return self._track(events)

    async def next(self, timeout: float) -> Event | None:
        """The next live event not yet handed out; None on timeout or close."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            event = await self.subscriber.next(remaining)
            if event is None:
                return None
            if self.accept(event):
                return event

    def ready(self, limit: int) -> list[Event]:
        """Live events that have already arrived (at most `limit`), without waiting."""
        batch: list[Event] = []
        while len(batch) < limit and not self.ended:
            event = self.subscriber.pop_ready()
            if event is None:
                break
            if self.accept(event):
                batch.append(event)
        return batch

    def accept(self, event: Event) -> bool:
        """Whether a live event is new to this client (and, if so, tracks it)."""
        cursor = event.cursor
        if cursor is not None:
            if self.last is not None and cursor <= self.last:
                return False
            self.last = cursor
        if event.terminal and self.source.ends_with_job:
            self.ended = True
        return True

    def _track(self, events: list[Event]) -> list[Event]:
        for event in events:
            if event.cursor is not None and (self.last is None or event.cursor > self.last):
                self.last = event.cursor
            if event.terminal and self.source.ends_with_job:
                self.ended = True
        return events

    def close(self) -> None:
        if self._subscribed:
            self._subscribed = False
            self._bus.unsubscribe(self.source.channel, self.subscriber)
