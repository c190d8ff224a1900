"""`POST /api/v1/jobs/{jobId}/events`: a service publishes one update of an
`external` job. It takes the actors' path (the journal's one atomic script:
state, both histories, pub/sub), so followers cannot tell who published."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import Counter

from hub.errors import BadRequest, JobFinished, NotExternal, NotFound
from hub.store.history import History, JobSnapshot
from hub.store.journal import Journal, utc_now
from hub.store.registry import Registry
from hub.store.schema import MAX_INPUT_BYTES
from hub.store.wire import ACTIVE, COMPLETED, FAILED, QUEUED
from hub.web import fields
from hub.web.handlers.base import Gate, JsonBodyHandler, find_job

PUBLISHED = (ACTIVE, COMPLETED, FAILED)
MAX_STEP_LENGTH = 200
MAX_REASON_LENGTH = 500
#: A completed job's result, as JSON, at most.
MAX_RESULT_BYTES = MAX_INPUT_BYTES
#: The reason of a failure published without one: a failed job always says why.
DEFAULT_FAILED_REASON = "the job failed"
SOURCE = "http"

T = TypeVar("T")


@dataclass(frozen=True)
class Update:
    """One publishing body, checked."""

    status: str
    progress: int | None = None
    step: str | None = None
    result: dict[str, Any] | None = None
    failed_reason: str | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Update:
        fields.refuse_unknown(body, ("status", "progress", "step", "result", "failedReason"))
        status = body.get("status")
        if status not in PUBLISHED:
            raise BadRequest(f"status must be one of: {', '.join(PUBLISHED)}")
        update = cls(
            status=status,
            progress=_optional(body, "progress", lambda v: fields.integer("progress", v, minimum=0, maximum=100)),
            step=_optional(body, "step", lambda v: fields.text("step", v, max_length=MAX_STEP_LENGTH)),
            result=_optional(body, "result", lambda v: fields.json_object("result", v, max_bytes=MAX_RESULT_BYTES)),
            failed_reason=_optional(
                body, "failedReason", lambda v: fields.text("failedReason", v, max_length=MAX_REASON_LENGTH)
            ),
        )
        if update.result is not None and status != COMPLETED:
            raise BadRequest("result is for a completed job only")
        if update.failed_reason is not None and status != FAILED:
            raise BadRequest("failedReason is for a failed job only")
        return update

    def patch(self, job: JobSnapshot) -> dict[str, Any]:
        """What the update changes in `job`, as the actors' lifecycle would."""
        now = utc_now()
        patch: dict[str, Any] = {"status": self.status}
        if self.progress is not None:
            patch["progress"] = self.progress
        if self.step is not None:
            patch["step"] = self.step
        if self.status == ACTIVE and job.state.get("status") == QUEUED:
            # The first sign of life: an external job has one attempt.
            patch.update(startedAt=now, attempt=1)
        elif self.status == COMPLETED:
            patch.update(progress=100, completedAt=now)
            if self.result is not None:
                patch["result"] = self.result
        elif self.status == FAILED:
            reason = self.failed_reason or DEFAULT_FAILED_REASON
            patch.update(failedReason=reason, result={"error": reason}, completedAt=now)
        return patch


def _optional(body: dict[str, Any], name: str, check: Callable[[Any], T]) -> T | None:
    # JSON null is as good as leaving the field out.
    value = body.get(name)
    return None if value is None else check(value)


class JobEventsHandler(JsonBodyHandler):
    def initialize(
        self, gate: Gate, history: History, journal: Journal, job_types: Registry, published: Counter
    ) -> None:
        self.history = history
        self.journal = journal
        self.job_types = job_types
        self.published = published

    async def post(self, job_id: str) -> None:
        await self.authenticate_service()
        update = Update.parse(self.json_body())
        job = await find_job(self.history, job_id)
        if job is None:
            raise NotFound("no such job")
        job_type = self.job_types.get(job.job_type)
        if job_type is None or not job_type.external:
            raise NotExternal(f"jobs of type {job.job_type!r} are run by the hub's workers, not published")
        if job.finished:
            raise JobFinished("the job has ended; nothing more can be published")
        ids = await self.journal.update(job_id, job.owner, job.job_type, **update.patch(job))
        if not ids:
            # It ended (or expired) between the read and the write.
            raise JobFinished("the job has ended; nothing more can be published")
        self.published.labels(SOURCE, update.status).inc()
        event_id = ids[0]
        self.write_json({"id": event_id.decode() if isinstance(event_id, bytes) else str(event_id)})
