"""What every handler shares: JSON errors, authentication, CORS, and request
summaries in logs that never include the query string (it may hold a token)."""

from __future__ import annotations

import json
import logging
import re
from types import TracebackType
from typing import Any

import redis.exceptions
import tornado.web

from hub.context import HubContext
from hub.errors import (
    BadRequest,
    ClientError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    StoreUnavailable,
    Unavailable,
)
from hub.history import JobSnapshot

log = logging.getLogger("hub.http")

#: Request bodies larger than this are refused (the jobs API takes small JSON).
MAX_JSON_BODY = 16 * 1024
_JOB_ID = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
TOKEN_COOKIE = "hub_token"

JSON_TYPE = "application/json"


class BaseHandler(tornado.web.RequestHandler):
    ctx: HubContext

    def initialize(self, ctx: HubContext, **kwargs: Any) -> None:
        self.ctx = ctx

    # -- responses --------------------------------------------------------

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        origin = self.request.headers.get("Origin")
        if origin and origin in self.ctx.settings.cors_origins:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Credentials", "true")
            self.set_header("Access-Control-Expose-Headers", "Retry-After")
            self.add_header("Vary", "Origin")

    def options(self, *args: Any) -> None:
        """CORS preflight: answered for allowed origins only."""
        origin = self.request.headers.get("Origin")
        if not origin or origin not in self.ctx.settings.cors_origins:
            raise ClientError("origin not allowed")
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def write_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(json.dumps(body, separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ClientError):
            error = exc
        elif isinstance(exc, (StoreUnavailable, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            error = Unavailable("Redis is not answering; try again shortly")
        elif status_code == 405:
            error = MethodNotAllowed(f"{self.request.method} is not allowed here")
        elif status_code == 404:
            error = NotFound("no such resource")
        elif status_code < 500:
            error = BadRequest(self._reason)
        else:
            self.set_header("Content-Type", JSON_TYPE)
            self.finish('{"error":"internal_error","message":"the hub failed to answer; see its log"}')
            return
        self.set_status(error.status)
        for name, value in error.headers().items():
            self.set_header(name, value)
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(json.dumps(error.body(), separators=(",", ":")))

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, ClientError):
            return  # an answer, not a failure; the access log has it
        if isinstance(value, (StoreUnavailable, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            log.warning("%s: Redis unavailable: %s", self._request_summary(), value.__class__.__name__)
            return
        super().log_exception(typ, value, tb)

    def _request_summary(self) -> str:
        # Tornado's default includes the full URI, and the query may hold a token.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    # -- requests ---------------------------------------------------------

    def token(self) -> str:
        header = self.request.headers.get("Authorization", "")
        if header:
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return ""
        query = self.get_query_argument("access_token", None)
        if query:
            return query
        return self.get_cookie(TOKEN_COOKIE) or ""

    def authenticate(self) -> str:
        """The user id of a valid token, or Unauthorized."""
        return self.ctx.verifier.verify(self.token())

    def json_body(self) -> dict[str, Any]:
        if len(self.request.body) > MAX_JSON_BODY:
            raise PayloadTooLarge(f"body larger than {MAX_JSON_BODY} bytes")
        content_type = self.request.headers.get("Content-Type", JSON_TYPE).split(";")[0].strip().lower()
        if content_type != JSON_TYPE:
            raise BadRequest("Content-Type must be application/json")
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    async def owned_job(self, job_type: str, job_id: str, user: str) -> JobSnapshot:
        """The job, if it exists, has this type and belongs to `user`; else 404
        (never 403: another user's job must look like no job at all)."""
        if not _JOB_ID.match(job_id):
            raise NotFound("no such job")
        job = await self.ctx.history.job(job_id)
        if job is None or job.owner != user or job.job_type != job_type:
            raise NotFound("no such job")
        return job


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise NotFound("no such resource")
