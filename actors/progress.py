"""The progress API for actors: `report(progress, step=...)`.

Any actor that runs a hub job can call it; the lifecycle middleware (not the
actor) reports start, retries, completion and failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.resilient import with_retries
from hub.store.files import JobFiles, file_url
from hub.store.journal import Journal
from hub.store.settings import Settings

_current = threading.local()


@dataclass(frozen=True)
class JobContext:
    """The hub job a worker thread is running right now."""

    job_id: str
    owner: str
    job_type: str
    attempt: int
    journal: Journal
    files: JobFiles
    settings: Settings
    on_published: Callable[[str], None] = lambda status: None

    def report(self, progress: int, step: str | None = None) -> None:
        patch: dict[str, Any] = {"status": "active", "progress": max(0, min(100, int(progress)))}
        if step is not None:
            patch["step"] = str(step)[:200]
        if with_retries(lambda: self.journal.update(self.job_id, self.owner, self.job_type, **patch)):
            self.on_published("active")

    def save_file(self, name: str, data: bytes, content_type: str) -> str:
        """Keeps a file the job made (as long as the job) and returns the URL
        its owner fetches it from."""
        ttl = self.settings.job_ttl_seconds
        with_retries(lambda: self.files.save(self.job_id, name, data, content_type, ttl))
        return file_url(self.job_id, name)

    def pause(self) -> None:
        """Waits as long as a remote model call would (HUB_JOB_STEP_SECONDS)."""
        time.sleep(self.settings.job_step_seconds)


def current_job() -> JobContext:
    job: JobContext | None = getattr(_current, "job", None)
    if job is None:
        raise RuntimeError("not running a hub job: report() works inside an actor started by the hub")
    return job


def report(progress: int, step: str | None = None) -> None:
    """Publishes the current job's progress (0..100) and, optionally, what it is doing."""
    current_job().report(progress, step)


def _enter(job: JobContext) -> None:
    _current.job = job


def _leave() -> None:
    _current.job = None
