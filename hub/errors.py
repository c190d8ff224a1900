"""The hub's exception tree: each client-facing error knows its status and JSON body."""

from __future__ import annotations

from typing import Any


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


class ConfigError(HubError):
    """A setting is missing or malformed; the process cannot start."""


class JobFailed(HubError):
    """Fails the running job at once, without a retry, and shows `message`
    to its users as the job's `failedReason` (and `result.error`). An actor
    raises it (`from actors import JobFailed`):

        raise JobFailed("the monthly quota is used up")

    Any other exception fails the attempt too, but users see only its class
    name: its text may hold what they must not read (SQL, file paths, hosts,
    secrets). The worker logs that text, with the job's id."""

    #: Longest `failedReason` users are shown.
    MESSAGE_MAX = 500

    def __init__(self, message: str) -> None:
        text = str(message).strip()
        super().__init__(text)
        self.message = text[: self.MESSAGE_MAX] or "the job failed"


class StoreError(HubError):
    """The job store's Redis failed a call. A translated failure's message is
    the class of Redis's exception ("ConnectionError"), never its text."""


class StoreUnavailable(StoreError):
    """Redis did not answer: the connection was refused, lost or timed out."""


class StoreFull(StoreError):
    """Redis is at its memory bound (maxmemory, noeviction): it refuses writes
    until jobs expire or the bound is raised."""


class ClientError(HubError):
    """An error that answers the request with the contract's JSON body."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code}
        if self.message:
            body["message"] = self.message
        body.update(self.extra)
        return body

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(ClientError):
    status = 400
    code = "bad_request"


class Unauthorized(ClientError):
    status = 401
    code = "unauthorized"


class Forbidden(ClientError):
    """The caller is known but may not do this: a service token where a user's
    is needed (streams, a user's own data), or a user's where a service's is."""

    status = 403
    code = "forbidden"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class Conflict(ClientError):
    """The request is well formed, but the job's state refuses it."""

    status = 409
    code = "conflict"


class JobFinished(Conflict):
    code = "job_finished"


class NotExternal(Conflict):
    code = "not_external"


class HeadersTooLarge(ClientError):
    status = 431
    code = "headers_too_large"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class RetryLater(ClientError):
    """A refusal that may succeed later: it says when, in `Retry-After`."""

    def __init__(self, message: str = "", *, retry_after: int, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(RetryLater):
    """Redis is unreachable."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str = "", retry_after: int = 2) -> None:
        super().__init__(message, retry_after=retry_after)


class TooManyConnections(RetryLater):
    status = 429
    code = "too_many_connections"

    def __init__(self, limit: int, retry_after: int = 5) -> None:
        super().__init__(retry_after=retry_after, limit=limit)


class RateLimited(RetryLater):
    """Too many jobs started (or tickets bought) in the last minute."""

    status = 429
    code = "rate_limited"

    def __init__(self, limit: int, retry_after: int, message: str = "too many jobs started this minute") -> None:
        super().__init__(message, retry_after=retry_after, limit=limit)


class ServerBusy(RetryLater):
    status = 503
    code = "server_busy"

    def __init__(self, retry_after: int = 5) -> None:
        super().__init__(retry_after=retry_after)
