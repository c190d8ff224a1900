"""What every handler shares: JSON errors, authentication, CORS, and request
summaries in logs that never include the query string (it may hold a token)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import tornado.httputil
import tornado.web
from tornado.http1connection import HTTP1Connection

from hub.errors import (
    BadRequest,
    ClientError,
    Forbidden,
    HeadersTooLarge,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    StoreFull,
    StoreUnavailable,
    Unauthorized,
    Unavailable,
)
from hub.store.history import History, JobSnapshot
from hub.store.redis_errors import store_error
from hub.web.auth import PUBLISH_SCOPE, Identity, TokenVerifier
from hub.web.tickets import Tickets

log = logging.getLogger("hub.http")

#: Request bodies larger than this are refused (the jobs API takes small JSON).
MAX_JSON_BODY = 16 * 1024
#: Tornado's limit on a chunked body for JsonBodyHandler, which answers
#: past MAX_JSON_BODY itself and keeps nothing beyond it.
CHUNKED_BODY_LIMIT = 64 * 1024 * 1024
#: Request headers larger than this, all together, are refused with JSON; the
#: server itself drops requests whose headers exceed a larger bound.
MAX_HEADERS = 16 * 1024
JOB_ID = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
TOKEN_COOKIE = "hub_token"

JSON_TYPE = "application/json"


def cors_headers(origin: str | None, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    """The CORS headers of an answer to `origin`: for the origins in
    `allowed` (HUB_CORS_ORIGINS) only, never `*`."""
    headers = []
    if allowed:
        # Whatever the Origin (or none), the answer depends on it: a cache
        # must not hand one origin's answer to another.
        headers.append(("Vary", "Origin"))
    if origin and origin in allowed:
        headers += [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Expose-Headers", "Retry-After"),
        ]
    return headers


def allow_origin(handler: tornado.web.RequestHandler, allowed: tuple[str, ...]) -> None:
    """The CORS headers on `handler`'s answer."""
    for name, value in cors_headers(handler.request.headers.get("Origin"), allowed):
        handler.add_header(name, value)


@dataclass(frozen=True)
class Gate:
    """What every handler needs, and only that: who is asking (tokens and
    stream tickets), which origins may, and whether the process is draining.
    Each handler takes whatever else it uses as arguments of its own."""

    verifier: TokenVerifier
    tickets: Tickets
    cors_origins: tuple[str, ...]
    #: True once SIGTERM has come: the process answers what it holds, then exits.
    draining: Callable[[], bool]


class BaseHandler(tornado.web.RequestHandler):
    gate: Gate
    #: "sse" or "longpoll" on handlers that hold the connection open and
    #: serve events (see SubscriptionHandler); empty on every other handler.
    transport = ""

    def __init__(
        self, application: tornado.web.Application, request: tornado.httputil.HTTPServerRequest, **kwargs: Any
    ) -> None:
        # Tornado's constructor calls set_default_headers() (through clear())
        # before initialize(), and the CORS headers need the gate by then.
        self.gate = kwargs["gate"]
        super().__init__(application, request, **kwargs)

    # -- responses --------------------------------------------------------

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        allow_origin(self, self.gate.cors_origins)

    def options(self, *args: Any) -> None:
        """CORS preflight: answered for allowed origins only."""
        origin = self.request.headers.get("Origin")
        if not origin or origin not in self.gate.cors_origins:
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
        exc = _hub_error(kwargs.get("exc_info", (None, None, None))[1])
        if isinstance(exc, ClientError):
            error = exc
        elif isinstance(exc, StoreUnavailable):
            error = Unavailable("Redis is not answering; try again shortly")
        elif isinstance(exc, StoreFull):
            # maxmemory reached (noeviction): writes fail until jobs expire or the bound is raised.
            error = Unavailable("the hub's store is full; try again later", retry_after=30)
        elif status_code == 405:
            error = MethodNotAllowed(f"{self.request.method} is not allowed here")
        elif status_code == 404:
            error = NotFound("no such resource")
        elif status_code < 500:
            error = BadRequest(self._reason)
        elif exc is None and self.gate.draining():
            # The process is exiting and Tornado cancelled a request still
            # running after the drain: it is worth retrying elsewhere.
            error = Unavailable("the hub is restarting; try again")
        else:
            self.set_header("Content-Type", JSON_TYPE)
            self.finish('{"error":"internal_error","message":"the hub failed to answer; see its log"}')
            return
        self.set_status(error.status)
        if isinstance(error, PayloadTooLarge):
            # The rest of the body is not read: the connection ends here.
            self.set_header("Connection", "close")
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
        if isinstance(value, tornado.web.HTTPError) and value.status_code < 500:
            # Tornado's message may quote a query argument (a token or a
            # ticket, for "Invalid unicode in ..."); the access log has the rest.
            return
        value = _hub_error(value)
        if isinstance(value, StoreUnavailable):
            log.warning("%s: Redis unavailable: %s", self._request_summary(), value)
            return
        if isinstance(value, StoreFull):
            log.error("%s: Redis is full (maxmemory): it refuses writes", self._request_summary())
            return
        # Not Tornado's default, which adds repr(request): the full URI, query included.
        log.error("uncaught exception in %s", self._request_summary(), exc_info=(typ, value, tb))  # type: ignore[arg-type]

    def _request_summary(self) -> str:
        # Tornado's default includes the full URI, and the query may hold a token.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    # -- requests ---------------------------------------------------------

    def prepare(self) -> None:
        size = sum(len(name) + len(value) + 4 for name, value in self.request.headers.get_all())
        if size > MAX_HEADERS:
            raise HeadersTooLarge(f"request headers larger than {MAX_HEADERS} bytes")

    def bearer_token(self) -> str | None:
        header = self.request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, credentials = header.partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else ""

    async def authenticate(self) -> Identity:
        """A user: from the Authorization header, a stream ticket, the
        access_token query parameter or the hub_token cookie; or Unauthorized.
        A service token is Forbidden: it opens no user's stream or data."""
        identity = await self.authenticate_caller()
        if identity.service:
            raise Forbidden("a service token cannot act for a user here; use a user's token")
        return identity

    async def authenticate_service(self) -> Identity:
        """A service (a token with the publish scope); a user is Forbidden."""
        identity = await self.authenticate_caller()
        if not identity.service:
            raise Forbidden(f"this call needs a service token (scope {PUBLISH_SCOPE})")
        return identity

    async def authenticate_caller(self) -> Identity:
        """A user or a service; or Unauthorized."""
        identity = await self._identity()
        if self.transport and identity.expires_at <= time.time():
            # A stream or held poll ends when its token expires. The verifier's
            # leeway would let the same token reopen it, only to end at once
            # (a long-poll client would spin): refused, so the client renews.
            raise Unauthorized("token expired")
        return identity

    async def _identity(self) -> Identity:
        header = self.bearer_token()
        if header is not None:
            return self.gate.verifier.verify(header)
        ticket = self.get_query_argument("ticket", None)
        if ticket:
            if not self.transport:
                # A ticket travels in a URL: it opens streams, nothing else.
                raise Unauthorized("a ticket only opens streams and long-polls")
            return await self.gate.tickets.redeem(ticket, self.request.path)
        token = self.get_query_argument("access_token", None)
        if not token:
            token = self.get_cookie(TOKEN_COOKIE) or ""
            if token:
                self._refuse_cross_site_cookie()
        identity = self.gate.verifier.verify(token)
        if identity.service:
            # A service's token may act for every user: it stays out of URLs
            # (and proxies' logs) and out of browsers' cookie jars.
            raise Forbidden("a service token is accepted in the Authorization header only")
        return identity

    def _refuse_cross_site_cookie(self) -> None:
        """A browser sends the cookie with any site's request (an EventSource,
        an <img>) once it is `SameSite=None`, as a cross-site setup needs: such
        a request could hold the user's connection slots or read their data.
        Browsers say where a request comes from in headers no page can set."""
        headers = self.request.headers
        site = headers.get("Sec-Fetch-Site")
        if site in ("same-origin", "none"):  # "none": the user typed the URL
            return
        origin = headers.get("Origin")
        if origin is None:
            if site is None:
                return  # no browser's request, or an old browser's same-origin GET
        elif origin in self.gate.cors_origins or origin.lower() == self._own_origin():
            return
        raise Forbidden(
            "the hub_token cookie is taken from this hub's own pages and HUB_CORS_ORIGINS only;"
            " from another site, send the token in the Authorization header or use a stream ticket"
        )

    def _own_origin(self) -> str:
        return f"{self.request.protocol}://{self.request.host}".lower()


@tornado.web.stream_request_body
class JsonBodyHandler(BaseHandler):
    """A handler that takes a small JSON body, read as it arrives so an
    oversized one is refused with the contract's JSON instead of being read."""

    def prepare(self) -> None:
        self._body = bytearray()
        if "Transfer-Encoding" in self.request.headers and isinstance(self.request.connection, HTTP1Connection):
            # A chunked body has no length to refuse it by up front: this
            # handler answers 413 once it passes MAX_JSON_BODY and drops the
            # rest unread, so the server's own (smaller, silent) limit must
            # not cut in first.
            self.request.connection.set_max_body_size(CHUNKED_BODY_LIMIT)
        super().prepare()
        length = self.request.headers.get("Content-Length", "")
        if re.fullmatch(r"[0-9]+", length) and (len(length) > 18 or int(length) > MAX_JSON_BODY):
            raise PayloadTooLarge(f"body larger than {MAX_JSON_BODY} bytes")

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return  # already answered (a 413 or 431 from prepare): the rest goes nowhere
        if len(self._body) + len(chunk) <= MAX_JSON_BODY:
            self._body.extend(chunk)
        else:
            # A chunked body has no Content-Length to refuse it by. Answered
            # here, not raised: Tornado takes an exception from data_received
            # for a crash, logs it and hangs up without an answer.
            self._body = bytearray()
            error = PayloadTooLarge(f"body larger than {MAX_JSON_BODY} bytes")
            self.send_error(error.status, exc_info=(PayloadTooLarge, error, None))

    def json_body(self) -> dict[str, Any]:
        # Required, not assumed when missing: neither a cross-site form nor a
        # fetch of an untyped body can send it without a CORS preflight, so a
        # cookie-authenticated POST cannot be forged from another site.
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != JSON_TYPE:
            raise BadRequest("Content-Type must be application/json")
        try:
            body = json.loads(bytes(self._body) or b"null")
        except (ValueError, RecursionError):
            # RecursionError: nesting deeper than the parser goes ("[[[[...").
            raise BadRequest("body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body


def _hub_error(exc: BaseException | None) -> BaseException | None:
    """`exc`, or the hub's error for a Redis failure that reached the handler
    untranslated: the store translates its own, but the connection manager's
    per-user slots (hub.delivery.connections) call Redis directly."""
    return (store_error(exc) or exc) if exc is not None else None


async def owned_job(history: History, job_type: str, job_id: str, user: str) -> JobSnapshot:
    """The job, if it exists, has this type and belongs to `user`; else 404
    (never 403: another user's job must look like no job at all)."""
    job = await find_job(history, job_id)
    if job is None or job.owner != user or job.job_type != job_type:
        raise NotFound("no such job")
    return job


async def find_job(history: History, job_id: str) -> JobSnapshot | None:
    """The job, whoever owns it; None for an unknown (or impossible) id."""
    if not JOB_ID.match(job_id):
        return None
    return await history.job(job_id)


class NotFoundHandler(BaseHandler):
    def initialize(self, gate: Gate) -> None:
        pass

    def prepare(self) -> None:
        raise NotFound("no such resource")
