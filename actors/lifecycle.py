"""A Dramatiq middleware that reports every hub job's lifecycle, whatever the
actor: `active` when an attempt starts, `retrying` when a retry is scheduled,
`completed` with the actor's result, and `failed` exactly once, when no
retry is left.

Dramatiq calls `after_*` hooks in reverse middleware order; installed before
`Retries`, this middleware sees a failed attempt after Retries has decided
whether to retry it. The final rejection of a message, whatever its cause,
always passes through `after_nack`, so that is where `failed` is published,
with the reason recorded on the way there: the last attempt's exception
(retries exhausted, time limit, a `throws` exception), the age limit (the
message was skipped, never run), or an actor this worker does not declare
(Dramatiq's consumer dead-letters such a message at once: `after_nack` is
the only hook that sees it).

Users see a safe reason: the message of a `JobFailed` the actor raised on
purpose (which is not retried), or the class of any other exception, never
its text; the worker logs that text with the job's id.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.common import current_millis
from dramatiq.middleware import AgeLimit, Retries, TimeLimitExceeded

from actors import progress
from actors.resilient import with_retries
from hub.errors import JobFailed
from hub.store.files import JobFiles
from hub.store.journal import Journal, utc_now
from hub.store.registry import JOB_OPTION
from hub.store.settings import Settings
from hub.store.user_queues import UserQueues

log = logging.getLogger("actors.lifecycle")

#: The length of an exception's text the worker logs.
DETAIL_MAX = 4_000
#: What users read of an exception the actor did not raise on purpose.
UNEXPECTED_REASON = "the job failed unexpectedly (the worker's log has the details)"
TIME_LIMIT_REASON = "the job ran longer than its time limit"
AGE_LIMIT_REASON = "the job waited in the queue longer than its age limit"
#: Why a job failed that no attempt ran, for no reason this middleware saw.
DROPPED_REASON = "the worker dropped the job without running it"


def undeclared_reason(job_type: str, actor_name: str) -> str:
    return (
        f"no worker runs job type {job_type!r} (actor {actor_name!r} is not declared; is HUB_APPS set for the workers?)"
    )


class JobLifecycle(Middleware):
    def __init__(
        self,
        *,
        redis: Any,
        settings: Settings,
        on_published: Callable[[str], None] | None = None,
        queues: UserQueues | None = None,
    ) -> None:
        """`queues` are the users' queues when the broker has a Redis of its own."""
        self._journal = Journal(redis, settings)
        self._on_published = on_published or (lambda status: None)
        self._files = JobFiles(redis, self._journal.keys)
        self._settings = settings
        self._queues = queues or UserQueues(redis, self._journal.keys, settings.job_ttl_seconds)
        # Why the last attempt of a message failed, until its nack.
        self._reasons: dict[str, str] = {}
        self._lock = threading.Lock()

    def install(self, broker: Broker) -> None:
        broker.add_middleware(self, before=Retries)
        broker.add_middleware(_FailOnPurpose(), after=Retries)

    def before_process_message(self, broker: Broker, message: Any) -> None:
        job = _job_of(message)
        if job is None:
            return
        # Counted in Redis, not from Dramatiq's retry count, so a redelivery
        # after a worker died is a new attempt too (and starts again at 0%).
        attempt = int(with_retries(lambda: self._journal.next_attempt(job["id"])))
        context = progress.JobContext(
            job_id=job["id"],
            owner=job["owner"],
            job_type=job["type"],
            attempt=attempt,
            journal=self._journal,
            files=self._files,
            settings=self._settings,
            on_published=self._on_published,
        )
        progress._enter(context)
        self._update(job, status="active", progress=0, attempt=attempt, startedAt=utc_now(), step="started")

    def after_process_message(self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None) -> None:
        progress._leave()
        job = _job_of(message)
        if job is None:
            return
        if exception is None:
            self._complete(job, result)
            self._release(job)
            return
        _FailOnPurpose.forget(message)
        _log_failure(job["id"], exception, final=bool(message.failed))
        if message.failed:
            with self._lock:
                self._reasons[message.message_id] = describe(exception)
        else:
            self._update(job, status="retrying", failedReason=describe(exception))

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        progress._leave()
        if message.failed and _job_of(message) is not None and _over_age_limit(broker, message):
            with self._lock:
                self._reasons[message.message_id] = AGE_LIMIT_REASON

    def after_nack(self, broker: Broker, message: Any) -> None:
        job = _job_of(message)
        if job is None:
            return
        with self._lock:
            reason = self._reasons.pop(message.message_id, None)
        if reason is None and message.actor_name not in broker.actors:
            reason = undeclared_reason(job["type"], message.actor_name)
            log.error("job %s failed: %s", job["id"], reason)
        self.fail(job, reason or DROPPED_REASON)
        self._release(job)

    def fail(self, job: dict[str, str], reason: str) -> None:
        self._update(job, status="failed", failedReason=reason, result={"error": reason}, completedAt=utc_now())

    def _complete(self, job: dict[str, str], result: Any) -> None:
        try:
            json.dumps(result)
        except (TypeError, ValueError):
            self.fail(job, "the actor returned a result that is not JSON")
            return
        self._update(job, status="completed", progress=100, result=result, completedAt=utc_now())

    def _release(self, job: dict[str, str]) -> None:
        """The job ended: the next of its owner's held jobs may go to the broker."""
        try:
            with_retries(lambda: self._queues.release(job["owner"], job["id"]))
        except Exception as exc:  # the workers' sweep sends it later
            log.warning("job %s ended; its owner's next job waits for a sweep: %s", job["id"], exc.__class__.__name__)

    def _update(self, job: dict[str, str], **patch: Any) -> None:
        if with_retries(lambda: self._journal.update(job["id"], job["owner"], job["type"], **patch)):
            self._on_published(patch["status"])


def _over_age_limit(broker: Broker, message: Any) -> bool:
    """Whether Dramatiq's age limit is what skipped `message` (its test, as
    AgeLimit makes it: the message is older than its `max_age`)."""
    limit = next((m for m in broker.middleware if isinstance(m, AgeLimit)), None)
    actor = broker.actors.get(message.actor_name)
    if limit is None or actor is None:
        return False
    max_age = message.options.get("max_age") or actor.options.get("max_age", limit.max_age)
    return bool(max_age) and current_millis() - message.message_timestamp >= max_age


def _job_of(message: Any) -> dict[str, str] | None:
    job = message.options.get(JOB_OPTION)
    return job if isinstance(job, dict) else None


class _FailOnPurpose(Middleware):
    """Makes a `JobFailed` final whatever the actor's retry options. Installed
    after Retries, it sees a failed attempt first (after-hooks run in
    reverse), and hands Retries the exception as one its actor `throws`:
    Retries then fails the message instead of retrying it."""

    def after_process_message(self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None) -> None:
        if isinstance(exception, JobFailed) and _job_of(message) is not None:
            message.options["throws"] = JobFailed

    @staticmethod
    def forget(message: Any) -> None:
        # A class is no JSON: it must not stay in options a later hook may encode.
        if message.options.get("throws") is JobFailed:
            del message.options["throws"]


def _log_failure(job_id: str, exception: BaseException, *, final: bool) -> None:
    if isinstance(exception, JobFailed):
        log.info("job %s failed on purpose: %s", job_id, exception.message)
    elif final:
        log.error("job %s failed: %s", job_id, detail(exception))
    else:
        log.warning("job %s: an attempt failed, to be retried: %s", job_id, detail(exception))


def describe(exception: BaseException) -> str:
    """What the job's users read of a failed attempt: the message of a
    `JobFailed`, else the exception's class and a fixed sentence. An
    exception's text may hold internals (SQL, paths, hosts, secrets): it
    goes to the worker's log only (see `detail`)."""
    if isinstance(exception, JobFailed):
        return exception.message
    name = exception.__class__.__name__
    if not name.isidentifier():
        name = "Exception"
    if isinstance(exception, TimeLimitExceeded):
        return f"{name}: {TIME_LIMIT_REASON}"
    return f"{name}: {UNEXPECTED_REASON}"[: JobFailed.MESSAGE_MAX]


def detail(exception: BaseException) -> str:
    """The exception's class and text, for the worker's log."""
    text = str(exception).strip()
    name = exception.__class__.__name__
    return (f"{name}: {text}" if text else name)[:DETAIL_MAX]
