"""The events waiting for one client while its writer is busy: a bounded
queue in which a job's newer progress replaces its older progress.

A client that has fallen behind needs each job's latest state, not every
step on the way to it. So a queued progress update (an `active` job_update)
is removed when a newer one of the same job arrives, and the newer one
joins the end of the queue: ids still only grow. Nothing else is ever
removed: statuses, terminal events, snapshots, resets and events without
an id all wait their turn, and a queue full of them is full.

Removal is O(1): each event waits in an entry, and a replaced entry is
blanked in place (skipped on the way out) rather than searched for. Blank
entries are swept out when they would make the queue twice its bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from hub.store.events import Cursor, Event


class _Entry:
    __slots__ = ("event",)

    def __init__(self, event: Event) -> None:
        #: None once a newer update of the same job replaced it.
        self.event: Event | None = event


class PendingEvents:
    """At most `bound` events, oldest first. `on_collapsed` is called for
    each update a newer one replaced; without it nothing is replaced."""

    __slots__ = ("_bound", "_count", "_entries", "_latest", "_on_collapsed")

    def __init__(self, bound: int, on_collapsed: Callable[[], None] | None = None) -> None:
        self._bound = bound
        self._on_collapsed = on_collapsed
        self._entries: deque[_Entry] = deque()
        #: The queued progress of each job: the entry a newer update blanks.
        self._latest: dict[str, _Entry] = {}
        #: Events waiting, blank entries not counted.
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, event: Event) -> bool:
        """Queues `event`; False if the queue is full (it is not queued)."""
        job = event.progress_job if self._on_collapsed is not None else None
        older = self._latest.get(job) if job is not None else None
        if older is None and self._count >= self._bound:
            return False
        entry = _Entry(event)
        if job is not None:
            self._latest[job] = entry
            if older is not None:
                older.event = None
                self._count -= 1
                assert self._on_collapsed is not None
                self._on_collapsed()
        if len(self._entries) >= 2 * self._bound:
            self._compact()
        self._entries.append(entry)
        self._count += 1
        return True

    def popleft(self) -> Event:
        """The oldest event waiting (IndexError if none)."""
        entries = self._entries
        while True:
            event = entries.popleft().event
            if event is not None:
                self._taken(event)
                return event

    def drop_through(self, position: Cursor) -> None:
        """Drops the oldest events, up to `position` included: the client
        has them from elsewhere (history read meanwhile)."""
        entries = self._entries
        while entries:
            event = entries[0].event
            if event is not None:
                if event.cursor is None or event.cursor > position:
                    return
                self._taken(event)
            entries.popleft()

    def _taken(self, event: Event) -> None:
        self._count -= 1
        if self._latest:  # only ever filled when progress collapses
            job = event.progress_job
            if job is not None:
                # An entry still holding progress is its job's latest.
                del self._latest[job]

    def _compact(self) -> None:
        self._entries = deque(entry for entry in self._entries if entry.event is not None)
