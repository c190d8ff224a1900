"""The client's exceptions. Every one derives from HubClientError, so a caller
can catch them all at once, or only the ones it can act on:

    HubClientError
    ├── BadRequest        400
    ├── Unauthorized      401
    ├── Forbidden         403
    ├── NotFound          404
    ├── Conflict          409
    │   ├── JobFinished   the job already ended: nothing more may be published
    │   └── NotExternal   the job's type is run by the hub's own workers
    ├── ProtocolError     an answer the API does not allow
    ├── OutcomeUnknown    the answer to a request that must not be repeated was lost
    └── RetriesExhausted  the hub stayed unreachable or busy

Messages never hold the token: they are built from the status, the hub's JSON
body and the URL path, none of which carries it.
"""

from __future__ import annotations

from typing import Any


class HubClientError(Exception):
    """The hub refused the request, or answered something the API does not
    promise. `status` is the HTTP status (None when there was no usable
    answer), `body` the decoded JSON body (None when there was none) and
    `code` the body's `error` code (`"not_found"`, `"job_finished"`, ...)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body

    @property
    def code(self) -> str | None:
        code = self.body.get("error") if isinstance(self.body, dict) else None
        return code if isinstance(code, str) else None


class BadRequest(HubClientError):
    """400: a malformed parameter or body, an unknown job type, or an input
    that does not fit the type's schema."""


class Unauthorized(HubClientError):
    """401: no token, or the hub does not accept it (expired, wrong key, ...)."""


class Forbidden(HubClientError):
    """403: the token is valid but may not do this: a user's token cannot
    publish, and a service token needs the `hub:publish` scope."""


class NotFound(HubClientError):
    """404: no such job, a job of another type, or another user's job."""


class Conflict(HubClientError):
    """409: the request does not fit the job's state."""


class JobFinished(Conflict):
    """The job already had its terminal event (`completed` or `failed`):
    nothing more may be published for it. Raised for the hub's 409
    `job_finished`, and by `RunningJob` without asking the hub once it has
    published the terminal event itself (then `status` is None)."""


class NotExternal(Conflict):
    """409 `not_external`: the job's type is run by the hub's own workers, so
    its progress cannot be published over HTTP."""


class ProtocolError(HubClientError):
    """The answer breaks the API: not an event stream, a frame over the size
    limit, data that is not a JSON object. Retrying would not help."""


class OutcomeUnknown(HubClientError):
    """The connection broke after a request that must not be sent twice
    (creating a job) had gone out: the hub may or may not have acted on it.
    The network error is the `__cause__`."""


class RetriesExhausted(HubClientError):
    """The hub could not be reached (or stayed busy) for `max_retries`
    attempts in a row. The last underlying error is the `__cause__`."""


_BY_STATUS: dict[int, type[HubClientError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound}
_CONFLICTS: dict[str, type[Conflict]] = {"job_finished": JobFinished, "not_external": NotExternal}


def error_for(status: int, body: Any, path: str) -> HubClientError:
    """The exception for a refusal the hub will not change its mind about."""
    error_class: type[HubClientError]
    if status == 409:
        code = body.get("error") if isinstance(body, dict) else None
        error_class = _CONFLICTS.get(code, Conflict) if isinstance(code, str) else Conflict
    else:
        error_class = _BY_STATUS.get(status, HubClientError)
    return error_class(describe(status, body, path), status, body)


def describe(status: int, body: Any, path: str) -> str:
    message = body.get("message") if isinstance(body, dict) else None
    detail = f": {message}" if isinstance(message, str) and message else ""
    return f"{status}{code_of(body)} for {path}{detail}"


def code_of(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f" ({body['error']})"
    return ""
