"""RunningJob: an external job's life in a `with` block.

    with client.run_job(job_id) as job:        # publishes `active`
        job.progress(30, step="download")
        job.result = {"rows": 1200}
    # publishes `completed` with job.result; had the block raised, `failed`
    # with the exception as the reason (and the exception goes on)

Exactly one terminal event is published, whatever happens: `complete()` or
`fail()` inside the block end the job early, and the end of the block then
publishes nothing more. Anything published after the terminal event raises
JobFinished without reaching the hub. One RunningJob may be shared by the
threads of one job: publishing is serialised.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from hub_client.errors import JobFinished
from hub_client.publishing import (
    MAX_REASON_CHARS,
    MAX_STEP_CHARS,
    TERMINAL_STATUSES,
    check_result,
    exception_reason,
)

if TYPE_CHECKING:
    from hub_client.client import HubClient

log = logging.getLogger("hub_client")


class RunningJob:
    def __init__(self, client: HubClient, job_id: str, *, step: str | None = None) -> None:
        if not job_id:
            raise ValueError("job_id must not be empty")
        self.job_id = job_id
        self._result: dict[str, Any] | None = None
        self._client = client
        self._first_step = step
        #: None until `active` is out, then the status last published.
        self._status: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RunningJob({self.job_id!r}, status={self.status!r})"

    @property
    def status(self) -> str | None:
        """The status last published (None before the block is entered)."""
        return self._status

    @property
    def result(self) -> dict[str, Any] | None:
        """Sent with the `completed` event at the end of the block: a JSON
        object (a mapping), or None for none. Anything else is refused when it
        is set, inside the block, so that the job fails with the mistake
        instead of staying active."""
        return self._result

    @result.setter
    def result(self, value: Mapping[str, Any] | None) -> None:
        self._result = None if value is None else check_result(value)

    @property
    def finished(self) -> bool:
        return self._status in TERMINAL_STATUSES

    def __enter__(self) -> RunningJob:
        self._publish("active", step=_clip(self._first_step, MAX_STEP_CHARS))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if error is None:
            with self._lock:
                if not self.finished:
                    self._publish_locked("completed", result=self.result)
            return
        with self._lock:
            if self.finished or isinstance(error, JobFinished):
                return  # ended already, by this block or by the hub
            try:
                self._publish_locked("failed", failed_reason=exception_reason(error))
            except Exception as publish_error:
                # The block's own exception matters more; the hub will fail the
                # job as stalled if this one never gets through.
                log.warning("job %s: could not publish its failure: %s", self.job_id, publish_error)
                error.add_note(f"hub_client: the job's failure could not be published: {publish_error}")
        # Returning None lets the exception propagate.

    def progress(self, percent: float, *, step: str | None = None) -> str | None:
        """Publishes how far the job is (0..100, never less than before) and,
        optionally, what it is doing now. Returns the event's id."""
        return self._publish("active", progress=percent, step=_clip(step, MAX_STEP_CHARS))

    def complete(self, result: Mapping[str, Any] | None = None) -> str | None:
        """Ends the job now, as completed with `result` (default: `self.result`)."""
        if result is not None:
            self.result = result
        return self._publish("completed", result=self.result)

    def fail(self, reason: str) -> str | None:
        """Ends the job now, as failed, without raising: the block goes on,
        and its end publishes nothing more."""
        return self._publish("failed", failed_reason=_clip(reason, MAX_REASON_CHARS) or "failed")

    def _publish(self, status: str, **fields: Any) -> str | None:
        with self._lock:
            return self._publish_locked(status, **fields)

    def _publish_locked(self, status: str, **fields: Any) -> str | None:
        if self.finished:
            raise JobFinished(
                f"job {self.job_id!r} is already {self._status}: nothing more may be published for it",
                None,
                {"error": "job_finished"},
            )
        cursor = self._client.publish(self.job_id, status, **fields)
        self._status = status
        return cursor


def _clip(text: str | None, limit: int) -> str | None:
    return None if text is None else str(text)[:limit]
