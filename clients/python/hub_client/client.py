"""HubClient: everything a Python program does with a hub.

- follow a job, or every job of a user, over Server-Sent Events or
  long-poll, surviving dropped connections without losing or repeating an
  event (`watch`, `watch_my`);
- create jobs and read them (`create_job`, `get_job`, `list_jobs`,
  `iter_jobs`, `job_types`);
- as a service (a token with the `hub:publish` scope), publish the progress
  of an external job (`publish`, or `run_job` as a context manager).

One client may be shared by threads. Each watch owns its connections; short
calls reuse one keep-alive connection per thread.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from hub_client.backoff import Backoff
from hub_client.calls import call, expect_success
from hub_client.endpoint import Endpoint
from hub_client.errors import JobFinished, ProtocolError
from hub_client.follow import TRANSPORTS, Event, FollowOptions, OnRetry, follow, job_tail
from hub_client.publishing import TERMINAL_STATUSES, event_body, was_ours
from hub_client.running import RunningJob
from hub_client.sse import DEFAULT_MAX_FRAME_CHARS, DEFAULT_MAX_LINE_BYTES

__all__ = ["TRANSPORTS", "Event", "HubClient"]

log = logging.getLogger("hub_client")

#: What a job type's name may be.
JOB_TYPE_NAME = re.compile(r"\A[a-z][a-z0-9_-]{0,31}\Z")
#: Longer than twice the hub's keepalive (15 s) and than its long-poll hold
#: (25 s): an idle stream or a held poll is not mistaken for a dead one, while
#: a connection that went silent (a dead peer, a stalled proxy) is noticed.
DEFAULT_TIMEOUT = 45.0
DEFAULT_CONNECT_TIMEOUT = 10.0
#: The first delay before a retry (until the hub's `retry:` says otherwise).
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_MAX_DELAY = 30.0
#: Retries of one call (create, read, list, publish) before RetriesExhausted:
#: with the default delays, about half a minute of trying.
DEFAULT_REQUEST_RETRIES = 5
DEFAULT_PAGE_SIZE = 20


class HubClient:
    """A hub at `base_url`, used with `token`: a user's JWT to create,
    read and follow that user's jobs, or a service's (scope `hub:publish`)
    to create jobs for any user and publish their progress."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_retries: int | None = None,
        request_retries: int = DEFAULT_REQUEST_RETRIES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_frame_chars: int = DEFAULT_MAX_FRAME_CHARS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`max_retries` bounds the reconnects of a watch (None: it keeps
        trying); `request_retries` bounds the retries of every other call."""
        if request_retries < 0:
            raise ValueError("request_retries must not be negative")
        self._endpoint = Endpoint(
            base_url, token, timeout=timeout, connect_timeout=connect_timeout, ssl_context=ssl_context
        )
        self._follow = FollowOptions(retry_delay, max_delay, max_retries, max_line_bytes, max_frame_chars)
        self._retry_delay = retry_delay
        self._max_delay = max_delay
        self._request_retries = request_retries
        self.base_url = base_url

    def __repr__(self) -> str:
        # Never the token: a repr ends up in logs and tracebacks.
        return f"HubClient({self.base_url!r})"

    def close(self) -> None:
        """Closes the calling thread's keep-alive connection (watches close
        their own). The client stays usable."""
        self._endpoint.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Following -------------------------------------------------------------

    def watch(
        self,
        job_id: str,
        type: str,
        *,
        transport: str = "sse",
        last_event_id: str | None = None,
        include_connected: bool = False,
        on_retry: OnRetry | None = None,
    ) -> Iterator[Event]:
        """Yields the events of job `job_id` of type `type` in order, each
        once, and stops after its terminal event (`completed` or `failed`)
        or when the hub answers 204 (the cursor is already at or after that
        event).

        Without `last_event_id` the first event is `initial_status`, the job's
        state now; with one, exactly the events after it. `connected`
        greetings (one per connection, SSE only) are left out unless asked
        for; `reset` and any other frame without an id (such as the hub's
        `token_expired`, after which the reconnect answers 401) pass through.
        Raises Unauthorized, Forbidden (a service's token: services open no
        user's stream), NotFound (also for a job of another type), BadRequest,
        ProtocolError, or RetriesExhausted when `max_retries` is set and
        reached. `on_retry(retry)` is told of every reconnect before its wait
        (why, how long, which attempt: see hub_client.follow.Retry), so that a
        program can say it is retrying instead of going quiet.
        """
        _check_type(type)
        if not job_id:
            raise ValueError("job_id must not be empty")
        return follow(
            self._endpoint,
            self._follow,
            job_tail(type, job_id),
            transport,
            last_event_id,
            ends_with_job=True,
            include_connected=include_connected,
            on_retry=on_retry,
        )

    def watch_my(
        self,
        *,
        transport: str = "sse",
        last_event_id: str | None = None,
        include_connected: bool = False,
        on_retry: OnRetry | None = None,
    ) -> Iterator[Event]:
        """Yields the events of every job of the token's user, including jobs
        created later. It never ends by itself: the caller breaks out."""
        return follow(
            self._endpoint,
            self._follow,
            "jobs/my",
            transport,
            last_event_id,
            ends_with_job=False,
            include_connected=include_connected,
            on_retry=on_retry,
        )

    # Jobs ----------------------------------------------------------------------

    def create_job(
        self, type: str, input: Mapping[str, Any] | None = None, *, owner: str | None = None
    ) -> dict[str, Any]:
        """Starts a job of `type` with `input` and returns the hub's answer:
        `{"jobId", "type", "status": "queued", "links": {"sse", "poll", "status"}}`.

        With a user's token the job is the user's; a service names the
        `owner`. Raises BadRequest for an unknown type or an input that does
        not fit the type's schema, Forbidden when a user names an owner or a
        service lacks the scope, and OutcomeUnknown when the connection broke
        after the request went out (the job may exist: it is never sent twice).
        """
        _check_type(type)
        body: dict[str, Any] = {"type": type}
        if owner is not None:
            if not owner:
                raise ValueError("owner must not be empty")
            body["owner"] = owner
        if input is not None:
            body["input"] = dict(input)
        created = self._call("POST", "/api/v1/jobs", body, resend=False)
        if not isinstance(created, dict) or not isinstance(created.get("jobId"), str):
            raise ProtocolError('a created job must be {"jobId": ...}', 202, created)
        return created

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job's state now: `{"jobId", "type", "status", "progress",
        "createdAt", "updatedAt", ...}`. Its owner and services may read it;
        anyone else gets NotFound."""
        answer = self._call("GET", _job_path(job_id))
        job = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(job, dict):
            raise ProtocolError('a job must come as {"data": {...}}', 200, answer)
        return job

    def list_jobs(
        self, limit: int = DEFAULT_PAGE_SIZE, before: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the user's jobs, newest first, finished ones included:
        `(jobs, next)`, where `next` is passed as `before` for the page after
        this one, and is None on the last page."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError("limit must be a positive integer")
        query: dict[str, str | int] = {"limit": limit}
        if before is not None:
            query["before"] = before
        answer = self._call("GET", f"/api/v1/jobs?{urlencode(query)}")
        jobs = answer.get("data") if isinstance(answer, dict) else None
        after = answer.get("next") if isinstance(answer, dict) else None
        if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
            raise ProtocolError('a job list must be {"data": [...], "next": ...}', 200, answer)
        if after is not None and not isinstance(after, str):
            raise ProtocolError('a job list\'s "next" must be a string or null', 200, answer)
        return jobs, after or None

    def iter_jobs(self, *, page_size: int = DEFAULT_PAGE_SIZE, before: str | None = None) -> Iterator[dict[str, Any]]:
        """Every job of the user, newest first, fetching pages as it goes."""
        jobs, after = self.list_jobs(page_size, before)
        return self._pages(jobs, after, page_size)

    def _pages(self, jobs: list[dict[str, Any]], after: str | None, page_size: int) -> Iterator[dict[str, Any]]:
        while True:
            yield from jobs
            if after is None:
                return
            jobs, after = self.list_jobs(page_size, after)

    def job_types(self) -> list[dict[str, Any]]:
        """The hub's job types: `[{"type", "runner": "actor" | "external",
        "input": JSON Schema, "view", "create"}, ...]`."""
        answer = self._call("GET", "/api/v1/job-types")
        types = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(types, list) or not all(isinstance(t, dict) for t in types):
            raise ProtocolError('job types must come as {"data": [...]}', 200, answer)
        return types

    def stream_ticket(self, user: str | None = None, path: str | None = None) -> str:
        """A one-minute ticket that opens a stream as `?ticket=...`, so a URL
        never carries a token. A service names the `user` and the stream's
        `path` (a job's `links["sse"]`): that is how a backend hands its
        user's browser one job's stream URL. A user's own ticket may be bound
        to one `path` too."""
        body: dict[str, Any] = {}
        if user is not None:
            body["user"] = user
        if path is not None:
            body["path"] = path
        answer = self._call("POST", "/api/v1/sse/tickets", body)
        ticket = answer.get("ticket") if isinstance(answer, dict) else None
        if not isinstance(ticket, str):
            raise ProtocolError('a ticket must come as {"ticket": ...}', 201, answer)
        return ticket

    # Publishing (services) -------------------------------------------------------

    def publish(
        self,
        job_id: str,
        status: str,
        *,
        progress: float | None = None,
        step: str | None = None,
        result: Mapping[str, Any] | None = None,
        failed_reason: str | None = None,
    ) -> str | None:
        """Publishes one update of an external job and returns its event id.

        `status` is `active` (with `progress` 0..100, never lower than
        before, and an optional `step`), `completed` (with an optional
        `result`) or `failed` (with `failed_reason`). Network errors, 429,
        502, 503 and 504 are retried (`request_retries` times); see
        hub_client.publishing for what a retry can and cannot repeat: after a
        lost answer, a terminal update that the hub did apply returns None.
        Raises Forbidden for a token without the `hub:publish` scope,
        JobFinished after the job's terminal event, NotExternal for a job the
        hub's own workers run, NotFound, BadRequest.
        """
        body = event_body(status, progress, step, result, failed_reason)
        path = _job_path(job_id) + "/events"
        answer = call(self._endpoint, "POST", path, body, self._backoff(), resend=True)
        if answer.reply.status == 409 and answer.uncertain and status in TERMINAL_STATUSES:
            try:
                expect_success(answer, path)
            except JobFinished:
                if was_ours(self.get_job(job_id), body):
                    log.info("job %s: the %s update got through, though its answer was lost", job_id, status)
                    return None
                raise
        published = expect_success(answer, path)
        cursor = published.get("id") if isinstance(published, dict) else None
        if not isinstance(cursor, str):
            raise ProtocolError('a published update must be answered {"id": ...}', answer.reply.status, published)
        return cursor

    def run_job(self, job_id: str, *, step: str | None = None) -> RunningJob:
        """A context manager for one run of an external job: `active` (with
        `step`) when the block starts, then exactly one terminal event:
        `completed` with `job.result` when it ends, `failed` with the
        exception when it raises (the exception goes on). See RunningJob."""
        return RunningJob(self, job_id, step=step)

    # Plumbing --------------------------------------------------------------------

    def _backoff(self) -> Backoff:
        return Backoff(self._retry_delay, self._max_delay, self._request_retries, max_retry_after=self._max_delay)

    def _call(self, method: str, path: str, body: Any = None, *, resend: bool = True) -> Any:
        answer = call(self._endpoint, method, path, body, self._backoff(), resend=resend)
        return expect_success(answer, path)


def _check_type(job_type: str) -> None:
    if not isinstance(job_type, str) or not JOB_TYPE_NAME.match(job_type):
        raise ValueError("a job type's name must match [a-z][a-z0-9_-]{0,31}")


def _job_path(job_id: str) -> str:
    if not job_id:
        raise ValueError("job_id must not be empty")
    return f"/api/v1/jobs/{quote(job_id, safe='')}"
