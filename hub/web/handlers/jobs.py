"""The jobs API: start a job, read its state (the old polling endpoint), fetch
a file a job made."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from hub.errors import NotFound, Unavailable
from hub.store.buckets import new_job_id
from hub.store.files import JobFiles
from hub.store.history import History
from hub.store.journal import Journal
from hub.store.registry import JobType
from hub.web.handlers.base import BaseHandler, Gate, JsonBodyHandler, find_job, owned_job
from hub.web.rate_limit import JobRateLimit

#: Sends a job to the workers: (job type, job id, owner, job input).
Enqueue = Callable[[JobType, str, str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class JobStarter:
    """Starts a job: the rate limit, the record, the queue, the metric."""

    journal: Journal
    enqueue: Enqueue
    job_rate: JobRateLimit
    jobs_created: Counter

    async def start(self, job_type: JobType, owner: str, job_input: dict[str, Any]) -> dict[str, Any]:
        """The job's answer (202), once it is recorded and queued."""
        await self.job_rate.check(owner)
        # Named for its owner's bucket: on a cluster the job's keys and the
        # owner's share a hash slot, found from the id alone.
        job_id = new_job_id(owner)
        await self.journal.create(job_id, owner, job_type.name, job_input=job_input, external=job_type.external)
        if not job_type.external:
            try:
                await self.enqueue(job_type, job_id, owner, job_input)
            except Exception as exc:
                reason = "the job could not be queued"
                await self.journal.update(
                    job_id, owner, job_type.name, status="failed", failedReason=reason, result={"error": reason}
                )
                raise Unavailable("the job queue is not answering; try again shortly") from exc
        self.jobs_created.labels(job_type.name).inc()
        return {"jobId": job_id, "type": job_type.name, "status": "queued", "links": job_type.links(job_id)}


class CreateJobHandler(JsonBodyHandler):
    """A type's seed path: `POST` starts a job of that type for the caller."""

    def initialize(self, gate: Gate, starter: JobStarter, job_type: JobType) -> None:
        self.starter = starter
        self.job_type = job_type

    async def post(self) -> None:
        user = (await self.authenticate()).user
        job_input = self.job_type.input.validate(self.json_body())
        self.write_json(await self.starter.start(self.job_type, user, job_input), status=202)


class JobStatusHandler(BaseHandler):
    def initialize(self, gate: Gate, history: History, job_type: JobType) -> None:
        self.history = history
        self.job_type = job_type

    async def get(self, job_id: str) -> None:
        user = (await self.authenticate()).user
        job = await owned_job(self.history, self.job_type.name, job_id, user)
        self.write_json({"data": job.state})


class JobFileHandler(BaseHandler):
    """A file a job made (a rendered image, say), for the job's owner only."""

    def initialize(self, gate: Gate, history: History, files: JobFiles) -> None:
        self.history = history
        self.files = files

    async def get(self, job_id: str, name: str) -> None:
        user = (await self.authenticate()).user
        job = await find_job(self.history, job_id)
        if job is None or job.owner != user:
            raise NotFound("no such job")
        found = await self.files.read(job_id, name)
        if found is None:
            raise NotFound("the file is not ready or has expired")
        data, content_type = found
        self.set_header("Content-Type", content_type or "application/octet-stream")
        self.set_header("Cache-Control", "private, max-age=3600")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(data)
