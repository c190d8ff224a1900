"""Short-lived stream tickets: a header-authenticated request exchanges its
token for a ticket that opens streams for a minute, so the long-lived token
never goes into a URL (native EventSource cannot send headers)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time

from redis.asyncio import Redis

from hub.errors import Unauthorized
from hub.store.keys import KeySpace
from hub.web.auth import Identity

TICKET_TTL_SECONDS = 60
_TICKET = re.compile(r"\A[A-Za-z0-9_-]{43}\Z")


class Tickets:
    def __init__(self, redis: Redis, keys: KeySpace, ttl: int = TICKET_TTL_SECONDS) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl

    async def issue(self, identity: Identity) -> tuple[str, int]:
        """A new ticket for `identity`, and how many seconds it is valid."""
        ticket = secrets.token_urlsafe(32)
        # Never valid beyond the token it stands for.
        ttl = max(1, min(self._ttl, int(identity.expires_at - time.time())))
        record = json.dumps({"user": identity.user, "exp": identity.expires_at})
        await self._redis.set(self._keys.ticket(_digest(ticket)), record, ex=ttl)
        return ticket, ttl

    async def redeem(self, ticket: str) -> Identity:
        if not _TICKET.match(ticket):
            raise Unauthorized("invalid ticket")
        record = await self._redis.get(self._keys.ticket(_digest(ticket)))
        if record is None:
            raise Unauthorized("unknown or expired ticket")
        data = json.loads(record)
        return Identity(user=str(data["user"]), expires_at=float(data["exp"]))


def _digest(ticket: str) -> str:
    # Stored by hash: whoever reads Redis cannot use the tickets in it.
    return hashlib.sha256(ticket.encode()).hexdigest()
