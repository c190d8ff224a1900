"""The jobs API: start a job, read its state (the old polling endpoint), fetch
a rendered image."""

from __future__ import annotations

import uuid
from typing import Any

from hub.web.context import HubContext
from hub.errors import NotFound, Unavailable
from hub.web.handlers.base import BaseHandler, JsonBodyHandler
from hub.web.job_inputs import VALIDATORS

#: API path segment -> job type.
PATH_TYPES = {"characters": "character", "media": "media"}


def job_links(job_type: str, job_id: str) -> dict[str, str]:
    status_segment = "characters" if job_type == "character" else "media"
    return {
        "sse": f"/api/v1/sse/jobs/{job_type}/{job_id}",
        "poll": f"/api/v1/poll/jobs/{job_type}/{job_id}",
        "status": f"/api/v1/{status_segment}/jobs/{job_id}",
    }


class CreateJobHandler(JsonBodyHandler):
    def initialize(self, ctx: HubContext, job_type: str = "", **kwargs: Any) -> None:
        super().initialize(ctx)
        self.job_type = job_type

    async def post(self) -> None:
        user = (await self.authenticate()).user
        job_input = VALIDATORS[self.job_type](self.json_body())
        await self.ctx.job_rate.check(user)
        job_id = uuid.uuid4().hex
        await self.ctx.journal.create(job_id, user, self.job_type)
        try:
            await self.ctx.enqueue(self.job_type, job_id, user, job_input)
        except Exception as exc:
            reason = "the job could not be queued"
            await self.ctx.journal.update(
                job_id, user, self.job_type, status="failed", failedReason=reason, result={"error": reason}
            )
            raise Unavailable("the job queue is not answering; try again shortly") from exc
        self.ctx.metrics.jobs_created.labels(self.job_type).inc()
        self.write_json(
            {
                "jobId": job_id,
                "type": self.job_type,
                "status": "queued",
                "links": job_links(self.job_type, job_id),
            },
            status=202,
        )


class JobStatusHandler(BaseHandler):
    async def get(self, segment: str, job_id: str) -> None:
        user = (await self.authenticate()).user
        job = await self.owned_job(PATH_TYPES[segment], job_id, user)
        self.write_json({"data": job.state})


class ImageHandler(BaseHandler):
    """The rendered image of a media job, for its owner only."""

    async def get(self, job_id: str) -> None:
        user = (await self.authenticate()).user
        await self.owned_job("media", job_id, user)
        image = await self.ctx.redis.get(self.ctx.keys.media(job_id))
        if image is None:
            raise NotFound("the image is not ready or has expired")
        self.set_header("Content-Type", "image/png")
        self.set_header("Cache-Control", "private, max-age=3600")
        self.finish(image)
