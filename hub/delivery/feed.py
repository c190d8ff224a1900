"""One client's view of one stream (a job's, or a user's for `/my`): what it
missed, then live events, with no gap and no duplicate.

The order matters: subscribe for live events first, then read history, then
release live events, skipping any that history already supplied. An event
published while history is being read is thus seen twice and sent once.

What the client missed comes in pages (`backlog`), each read only when the
previous one has been sent, so a request holds one page however long the
history or the snapshot: a snapshot of the current state (no cursor, or a
cursor history no longer reaches), history after a cursor, or both for a
snapshot resumed half way (its remaining pages, then history after its head).
Both transports use this; they differ only in how they write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hub.delivery.bus import EventBus
from hub.delivery.subscriber import Subscriber
from hub.store.events import BEGINNING, Cursor, Event, format_cursor, parse_cursor
from hub.store.history import CursorState, History, Position, SnapshotCursor, SnapshotPage
from hub.store.keys import KeySpace

#: Events one long-poll answer holds at most.
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

    async def snapshot(self, history: History, start: SnapshotCursor | None, limit: int) -> SnapshotPage:
        job = await history.job(self.job_id)
        if job is None:
            return SnapshotPage([], None)
        return SnapshotPage([job.initial_status()], parse_cursor(job.last_id) if job.last_id else None)

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

    async def snapshot(self, history: History, start: SnapshotCursor | None, limit: int) -> SnapshotPage:
        return await history.user_page(self.user_id, start, limit)

    def reset_event(self) -> Event:
        return Event.make({"type": "reset", "message": RESET_MESSAGE})


RESET_MESSAGE = "events after your cursor are no longer kept; current state follows"

Source = JobSource | UserSource


class Phase:
    SNAPSHOT = "snapshot"
    HISTORY = "history"
    #: Caught up: only live events are left.
    LIVE = "live"


class Feed:
    __slots__ = (
        "_bus",
        "_fresh",
        "_history",
        "_pending",
        "_snapshot_from",
        "_start",
        "_subscribed",
        "ended",
        "last",
        "phase",
        "source",
        "subscriber",
    )

    def __init__(self, *, bus: EventBus, history: History, source: Source, cursor: Position | None, max_queued: int):
        self._bus = bus
        self._history = history
        self.source = source
        self._start = cursor
        self.subscriber = Subscriber(max_queued)
        self._subscribed = False
        #: The newest cursor handed out; live events at or before it are duplicates.
        self.last: Cursor | None = None
        self.ended = False
        self.phase = Phase.LIVE
        #: Where the snapshot's next page starts (None: at its beginning).
        self._snapshot_from: SnapshotCursor | None = None
        #: Whether the snapshot's head was read under this feed's subscription,
        #: so that live events take over from it directly.
        self._fresh = False
        #: Events that go before the next page (a `reset`).
        self._pending: list[Event] = []

    async def open(self) -> None:
        """Subscribes, then finds where what the client missed starts."""
        await self._bus.subscribe(self.source.channel, self.subscriber)
        self._subscribed = True
        start = self._start
        if start is None or isinstance(start, SnapshotCursor):
            self._begin_snapshot(start)
        else:
            self._begin_history(start)

    async def backlog(self, limit: int) -> list[Event]:
        """The next page of what the client missed, at most `limit` events,
        oldest first; [] once only live events are left."""
        page: list[Event] = []
        while not page and self.phase != Phase.LIVE:
            room = limit - len(self._pending)
            if self.phase == Phase.SNAPSHOT:
                page = await self._snapshot_page(room)
            else:
                page = await self._history_page(room)
        if self._pending:
            page, self._pending = [*self._pending, *page], []
        self._track(page)
        if self.ended:
            self.phase = Phase.LIVE
        if self.last is not None:
            # What history supplied need not wait in the live queue as well.
            self.subscriber.discard_through(self.last)
        return page

    def resume_cursor(self) -> str:
        """What the client sends back to go on from what it has been handed:
        the snapshot's position while it has pages left, else the last cursor."""
        if self.phase == Phase.SNAPSHOT and self._snapshot_from is not None:
            return str(self._snapshot_from)
        # A user with no events yet goes on from the very beginning.
        return format_cursor(self.last or BEGINNING)

    def _begin_snapshot(self, start: SnapshotCursor | None) -> None:
        self.phase = Phase.SNAPSHOT
        self._snapshot_from = start
        self._fresh = start is None
        if start is not None:
            self.last = start.head

    def _begin_history(self, cursor: Cursor) -> None:
        self.phase = Phase.HISTORY
        self.last = cursor

    def _reset(self) -> None:
        """History no longer holds everything after the client's place: say
        so, and send the current state instead of a silent gap."""
        self._pending.append(self.source.reset_event())
        self._begin_snapshot(None)

    async def _snapshot_page(self, limit: int) -> list[Event]:
        first = self._snapshot_from is None
        page = await self.source.snapshot(self._history, self._snapshot_from, limit)
        if first:
            # The state as of `head`: what follows it is live. A user without
            # any event yet starts from the very beginning.
            self.last = page.head or BEGINNING
        self._snapshot_from = page.next
        if page.next is None:
            if self._fresh:
                self.phase = Phase.LIVE
            else:
                # Resumed half way: what happened since the head is in history.
                self._begin_history(page.head or BEGINNING)
        return page.events

    async def _history_page(self, limit: int) -> list[Event]:
        assert self.last is not None
        page = await self._history.after(self.source.stream, self.last, limit)
        # Checked after the read: trimming only removes the oldest entries, so
        # if nothing after `last` is gone now, nothing was when the page was
        # read. (A stream trims while a slow client takes its earlier pages.)
        if await self._history.cursor_state(self.source.stream, self.last) == CursorState.EVICTED:
            self._reset()
            return []
        if len(page) < limit:
            self.phase = Phase.LIVE
        return page

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

    def _track(self, events: list[Event]) -> None:
        for event in events:
            if event.cursor is not None and (self.last is None or event.cursor > self.last):
                self.last = event.cursor
            if event.terminal and self.source.ends_with_job:
                self.ended = True

    def close(self) -> None:
        if self._subscribed:
            self._subscribed = False
            self._bus.unsubscribe(self.source.channel, self.subscriber)
