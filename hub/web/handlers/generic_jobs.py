"""The jobs API for every registered type: create a job (a user for
themselves, a service for a user), list a user's jobs, read one, and learn
which job types the deployment has."""

from __future__ import annotations

import re
from typing import Any

from hub.errors import BadRequest, Forbidden, NotFound
from hub.store.history import History
from hub.store.registry import JobType, Registry
from hub.web import fields
from hub.web.auth import MAX_USER_ID_LENGTH, PUBLISH_SCOPE, Identity
from hub.web.handlers.base import BaseHandler, Gate, JsonBodyHandler, find_job
from hub.web.handlers.jobs import JobStarter

DEFAULT_PAGE = 20
MAX_PAGE = 100
#: A page position as `History.jobs_of` hands it out (a zero-padded cursor).
_BEFORE = re.compile(r"\A[0-9]{20}-[0-9]{20}\Z")
_LIMIT = re.compile(r"\A[0-9]{1,4}\Z")


class JobsHandler(JsonBodyHandler):
    """`POST /api/v1/jobs` creates a job of any type; `GET` lists the caller's."""

    def initialize(self, gate: Gate, starter: JobStarter, history: History, job_types: Registry) -> None:
        self.starter = starter
        self.history = history
        self.job_types = job_types

    async def post(self) -> None:
        identity = await self.authenticate_caller()
        body = self.json_body()
        fields.refuse_unknown(body, ("type", "input", "owner"))
        owner = self._owner(identity, body)
        job_type = self._job_type(body.get("type"))
        if job_type.external and not identity.service:
            raise Forbidden(
                f"jobs of type {job_type.name!r} are external: the app's backend creates them "
                f"with a service token (scope {PUBLISH_SCOPE}), since only its own workers run them"
            )
        job_input = job_type.input.validate(body.get("input"))
        self.write_json(await self.starter.start(job_type, owner, job_input), status=202)

    async def get(self) -> None:
        user = (await self.authenticate()).user
        limit = self._limit(self.get_query_argument("limit", None))
        before = self.get_query_argument("before", None)
        if before is not None and not _BEFORE.match(before):
            raise BadRequest("before must be the `next` of a previous page")
        jobs, next_page = await self.history.jobs_of(user, limit, before)
        self.write_json({"data": jobs, "next": next_page})

    @staticmethod
    def _owner(identity: Identity, body: dict[str, Any]) -> str:
        if not identity.service:
            if "owner" in body:
                raise Forbidden("only a service token may create a job for someone else; leave out owner")
            return identity.user
        if body.get("owner") is None:
            raise BadRequest("owner is required: the user the job is for")
        return fields.text("owner", body["owner"], min_length=1, max_length=MAX_USER_ID_LENGTH)

    def _job_type(self, name: Any) -> JobType:
        if not isinstance(name, str):
            raise BadRequest("type is required: the name of a job type (see GET /api/v1/job-types)")
        job_type = self.job_types.get(name)
        if job_type is None:
            raise BadRequest("unknown job type (see GET /api/v1/job-types)")
        return job_type

    @staticmethod
    def _limit(raw: str | None) -> int:
        if raw is None:
            return DEFAULT_PAGE
        if not _LIMIT.match(raw) or not 1 <= int(raw) <= MAX_PAGE:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}")
        return int(raw)


class JobHandler(BaseHandler):
    """`GET /api/v1/jobs/{jobId}`: for its owner, or any service."""

    def initialize(self, gate: Gate, history: History) -> None:
        self.history = history

    async def get(self, job_id: str) -> None:
        identity = await self.authenticate_caller()
        job = await find_job(self.history, job_id)
        if job is None or not (identity.service or job.owner == identity.user):
            raise NotFound("no such job")
        # The input is the owner's own data; a service, which may act for
        # any user, also learns whose job it is.
        data = {**job.state, "input": job.job_input}
        if identity.service:
            data["owner"] = job.owner
        self.write_json({"data": data})


class JobTypesHandler(BaseHandler):
    """`GET /api/v1/job-types`: public; it describes the deployment, not anyone's data."""

    def initialize(self, gate: Gate, job_types: Registry) -> None:
        self.job_types = job_types

    def get(self) -> None:
        self.write_json({"data": [job_type.describe() for job_type in self.job_types]})
