"""The client's exceptions. Every one derives from HubClientError, so a caller
can catch them all at once, or only the ones it can act on.

Messages never hold the token: they are built from the status, the hub's JSON
body and the URL path, none of which carries it.
"""

from __future__ import annotations

from typing import Any


class HubClientError(Exception):
    """The hub refused the request, or answered something the API does not
    promise. `status` is the HTTP status (None when there was no usable
    answer) and `body` the decoded JSON body (None when there was none)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


class BadRequest(HubClientError):
    """400: a malformed parameter, such as a cursor that is not an event id."""


class Unauthorized(HubClientError):
    """401: no token, or the hub does not accept it (expired, wrong key, ...)."""


class NotFound(HubClientError):
    """404: no such job, a job of the other type, or another user's job."""


class ProtocolError(HubClientError):
    """The answer breaks the API: not an event stream, a frame over the size
    limit, data that is not a JSON object. Retrying would not help."""


class RetriesExhausted(HubClientError):
    """The hub could not be reached (or stayed busy) for `max_retries`
    attempts in a row. The last underlying error is the `__cause__`."""
