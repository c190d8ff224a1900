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
from hub.store.files import FILE_NAME, FILE_NAME_PATTERN, MAX_FILE_BYTES, file_url
from hub.store.journal import Journal
from hub.store.keys import KeySpace
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
    redis: Any
    settings: Settings
    on_published: Callable[[str], None] = lambda status: None

    @property
    def keys(self) -> KeySpace:
        return self.journal.keys

    def report(self, progress: int, step: str | None = None) -> None:
        patch: dict[str, Any] = {"status": "active", "progress": max(0, min(100, int(progress)))}
        if step is not None:
            patch["step"] = str(step)[:200]
        if with_retries(lambda: self.journal.update(self.job_id, self.owner, self.job_type, **patch)):
            self.on_published("active")

    def save_file(self, name: str, data: bytes, content_type: str) -> str:
        """Keeps a file the job made (as long as the job) and returns the URL
        its owner fetches it from."""
        if not FILE_NAME.match(name):
            raise ValueError(f"file name {name!r} must match {FILE_NAME_PATTERN}")
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"file {name!r} is larger than {MAX_FILE_BYTES} bytes")
        key = self.keys.job_file(self.job_id, name)

        def store() -> None:
            pipe = self.redis.pipeline()
            pipe.hset(key, mapping={"data": data, "type": content_type})
            pipe.expire(key, self.settings.job_ttl_seconds)
            pipe.execute()

        with_retries(store)
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
