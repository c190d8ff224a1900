"""The jobs API: start a job, read its state (the old polling endpoint), fetch
a file a job made."""

from __future__ import annotations

import uuid
from typing import Any

from hub.errors import NotFound, Unavailable
from hub.store.files import JobFiles
from hub.store.registry import JobType
from hub.web.context import HubContext
from hub.web.handlers.base import BaseHandler, JsonBodyHandler


class CreateJobHandler(JsonBodyHandler):
    def initialize(self, ctx: HubContext, job_type: JobType | None = None, **kwargs: Any) -> None:
        super().initialize(ctx)
        self.job_type = job_type

    async def post(self) -> None:
        assert self.job_type is not None
        user = (await self.authenticate()).user
        job_input = self.job_type.input.validate(self.json_body())
        await self.start_job(self.job_type, user, job_input)

    async def start_job(self, job_type: JobType, owner: str, job_input: dict[str, Any]) -> None:
        await self.ctx.job_rate.check(owner)
        job_id = uuid.uuid4().hex
        await self.ctx.journal.create(job_id, owner, job_type.name, job_input=job_input, external=job_type.external)
        if not job_type.external:
            try:
                await self.ctx.enqueue(job_type, job_id, owner, job_input)
            except Exception as exc:
                reason = "the job could not be queued"
                await self.ctx.journal.update(
                    job_id, owner, job_type.name, status="failed", failedReason=reason, result={"error": reason}
                )
                raise Unavailable("the job queue is not answering; try again shortly") from exc
        self.ctx.metrics.jobs_created.labels(job_type.name).inc()
        self.write_json(
            {"jobId": job_id, "type": job_type.name, "status": "queued", "links": job_type.links(job_id)},
            status=202,
        )


class JobStatusHandler(BaseHandler):
    def initialize(self, ctx: HubContext, job_type: JobType | None = None, **kwargs: Any) -> None:
        super().initialize(ctx)
        self.job_type = job_type

    async def get(self, job_id: str) -> None:
        assert self.job_type is not None
        user = (await self.authenticate()).user
        job = await self.owned_job(self.job_type.name, job_id, user)
        self.write_json({"data": job.state})


class JobFileHandler(BaseHandler):
    """A file a job made (a rendered image, say), for the job's owner only."""

    async def get(self, job_id: str, name: str) -> None:
        user = (await self.authenticate()).user
        job = await self.find_job(job_id)
        if job is None or job.owner != user:
            raise NotFound("no such job")
        found = await JobFiles(self.ctx.redis, self.ctx.keys).read(job_id, name)
        if found is None:
            raise NotFound("the file is not ready or has expired")
        data, content_type = found
        self.set_header("Content-Type", content_type or "application/octet-stream")
        self.set_header("Cache-Control", "private, max-age=3600")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(data)
