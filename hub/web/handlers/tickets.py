"""`POST /api/v1/sse/tickets`: a one-minute stream ticket for `?ticket=`,
the recommended way to authenticate native EventSource (see CLIENTS.md)."""

from __future__ import annotations

import time

from hub.errors import Unauthorized
from hub.web.handlers.base import BaseHandler


class TicketHandler(BaseHandler):
    async def post(self) -> None:
        # Only a header proves the caller holds the token: a cookie would let
        # another site mint tickets in the user's name.
        if not self.bearer_token():
            raise Unauthorized("a ticket is issued for an Authorization: Bearer header only")
        identity = await self.authenticate()
        if identity.expires_at <= time.time():
            # Within the leeway, but the streams it would open refuse it.
            raise Unauthorized("token expired")
        ticket, ttl = await self.ctx.tickets.issue(identity)
        self.write_json({"ticket": ticket, "expiresIn": ttl}, status=201)
