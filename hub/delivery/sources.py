"""What a client follows: one job's stream, or every job of one user (`/my`)."""

from __future__ import annotations

from dataclasses import dataclass

from hub.store.events import Cursor, Event, format_cursor, parse_cursor
from hub.store.history import History, SnapshotCursor, SnapshotPage
from hub.store.keys import KeySpace

RESET_MESSAGE = "events after your cursor are no longer kept; current state follows"


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

    def greeting(self) -> Event:
        return Event.make({"type": "connected", "jobId": self.job_id, "message": "Connected to job status stream"})

    def reset_event(self, at: Cursor | None = None) -> Event:
        return Event.make({"type": "reset", "jobId": self.job_id, "message": RESET_MESSAGE}, _id(at))


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

    def greeting(self) -> Event:
        return Event.make({"type": "connected", "message": "Connected to your job stream"})

    def reset_event(self, at: Cursor | None = None) -> Event:
        return Event.make({"type": "reset", "message": RESET_MESSAGE}, _id(at))


Source = JobSource | UserSource


def _id(at: Cursor | None) -> str | None:
    """A reset's own id, when it says where the client now stands."""
    return format_cursor(at) if at is not None else None
