"""`POST /api/v1/sse/tickets`: a one-minute stream ticket for `?ticket=`,
the recommended way to authenticate native EventSource (see CLIENTS.md).

A user buys one with their token, for any one of their streams (used up by
that stream's first request) or (body `{"path": ...}`) for one stream, which
it opens as often as needed within its minute. A service buys one for a
user's stream (body `{"user": ..., "path": ...}`), so a backend can hand its
user a stream URL without handing out a token. At most `TICKETS_PER_MINUTE`
are bought for one user in any minute (429 `rate_limited`)."""

from __future__ import annotations

import time
from typing import Any

from hub.errors import BadRequest, Unauthorized
from hub.web import fields
from hub.web.auth import MAX_USER_ID_LENGTH, Identity
from hub.web.handlers.base import Gate, JsonBodyHandler
from hub.web.tickets import stream_of


class TicketHandler(JsonBodyHandler):
    def initialize(self, gate: Gate) -> None:
        pass  # tickets are the gate's: they are how a stream's caller is known

    async def post(self) -> None:
        # Only a header proves the caller holds the token: a cookie would let
        # another site mint tickets in the user's name.
        if not self.bearer_token():
            raise Unauthorized("a ticket is issued for an Authorization: Bearer header only")
        caller = await self.authenticate_caller()
        if caller.expires_at <= time.time():
            # Within the leeway, but the streams it would open refuse it.
            raise Unauthorized("token expired")
        body = self._body_or_empty()
        fields.refuse_unknown(body, ("path", "user") if caller.service else ("path",))
        stream = self._stream(body.get("path"), required=caller.service)
        identity = caller
        if caller.service:
            user = fields.text("user", body.get("user"), min_length=1, max_length=MAX_USER_ID_LENGTH)
            identity = Identity(user=user, expires_at=caller.expires_at)
        ticket, ttl = await self.gate.tickets.issue(identity, stream)
        self.write_json({"ticket": ticket, "expiresIn": ttl}, status=201)

    def _body_or_empty(self) -> dict[str, Any]:
        # Without a body, a user's ticket opens any one of their streams, once.
        return self.json_body() if self._body else {}

    @staticmethod
    def _stream(path: Any, *, required: bool) -> str | None:
        if path is None:
            if required:
                raise BadRequest("path is required: the stream the ticket opens, e.g. links.sse of the job")
            return None
        stream = stream_of(path) if isinstance(path, str) else None
        if stream is None:
            raise BadRequest("path must be an SSE or long-poll path, e.g. /api/v1/sse/jobs/my")
        return stream
