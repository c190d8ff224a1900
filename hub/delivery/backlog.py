"""What one client missed, read from Redis page by page.

That is a snapshot of the current state (no cursor, or a cursor history no
longer reaches), history after a cursor, or both for a snapshot resumed half
way (its remaining pages, then history after its head). Each page is read
only when the previous one has been sent, so a client holds one page
however long the history or the snapshot.
"""

from __future__ import annotations

from hub.delivery.sources import Source
from hub.store.events import BEGINNING, Cursor, Event, format_cursor
from hub.store.history import History, Position, SnapshotCursor


class Phase:
    SNAPSHOT = "snapshot"
    HISTORY = "history"
    #: Nothing missed is left to read.
    DONE = "done"


class Backlog:
    __slots__ = ("_fresh", "_history", "_pending", "_snapshot_from", "_source", "ended", "phase", "position")

    def __init__(self, history: History, source: Source, start: Position | None) -> None:
        self._history = history
        self._source = source
        #: Where the client is in the stream once the pages read so far are
        #: sent; live events at or before it are duplicates.
        self.position: Cursor | None = None
        #: Whether a page held the job's terminal event.
        self.ended = False
        #: Where the snapshot's next page starts (None: at its beginning).
        self._snapshot_from: SnapshotCursor | None = None
        #: Whether the snapshot's head is read under the client's
        #: subscription, so that live events take over from it directly.
        self._fresh = False
        #: Events that go before the next page (a `reset`).
        self._pending: list[Event] = []
        self.phase = Phase.DONE
        if start is None or isinstance(start, SnapshotCursor):
            self._begin_snapshot(start)
        else:
            self._begin_history(start)

    @property
    def done(self) -> bool:
        return self.phase == Phase.DONE

    async def next_page(self, limit: int) -> list[Event]:
        """At most `limit` events, oldest first; [] once nothing is left."""
        page: list[Event] = []
        while not page and self.phase != Phase.DONE:
            room = limit - len(self._pending)
            page = await (self._snapshot_page(room) if self.phase == Phase.SNAPSHOT else self._history_page(room))
        if self._pending:
            page, self._pending = [*self._pending, *page], []
        for event in page:
            if event.cursor is not None and (self.position is None or event.cursor > self.position):
                self.position = event.cursor
            if event.terminal and self._source.ends_with_job:
                self.ended = True
        if self.ended:
            self.phase = Phase.DONE
        return page

    def resume_cursor(self) -> str:
        """What the client sends back to go on from the pages it has: the
        snapshot's position while it has pages left, else a stream cursor."""
        if self.phase == Phase.SNAPSHOT and self._snapshot_from is not None:
            return str(self._snapshot_from)
        # A user with no events yet goes on from the very beginning.
        return format_cursor(self.position or BEGINNING)

    def _begin_snapshot(self, start: SnapshotCursor | None) -> None:
        self.phase = Phase.SNAPSHOT
        self._snapshot_from = start
        self._fresh = start is None
        if start is not None:
            self.position = start.head

    def _begin_history(self, cursor: Cursor) -> None:
        self.phase = Phase.HISTORY
        self.position = cursor

    async def _snapshot_page(self, limit: int) -> list[Event]:
        first = self._snapshot_from is None
        page = await self._source.snapshot(self._history, self._snapshot_from, limit)
        if first:
            # The state as of `head`: what follows it is live. A user without
            # any event yet starts from the very beginning.
            self.position = page.head or BEGINNING
            if self._pending and not page.events:
                # No state follows the reset (no job is open): the reset itself
                # carries where the client now stands, or its next reconnect
                # would bring back the lost cursor and be reset again.
                self._pending = [self._source.reset_event(self.position)]
        self._snapshot_from = page.next
        if page.next is None:
            if self._fresh:
                self.phase = Phase.DONE
            else:
                # Resumed half way: what happened since the head is in history.
                self._begin_history(page.head or BEGINNING)
        return page.events

    async def _history_page(self, limit: int) -> list[Event]:
        assert self.position is not None
        page, kept = await self._history.after(self._source.stream, self.position, limit)
        if not kept:
            # Said, with the current state after it, instead of a silent gap.
            self._pending.append(self._source.reset_event())
            self._begin_snapshot(None)
            return []
        if len(page) < limit:
            self.phase = Phase.DONE
        return page
