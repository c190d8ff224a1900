"""Short-lived stream tickets: a header-authenticated request exchanges its
token for a ticket that opens streams for a minute, so the long-lived token
never goes into a URL (native EventSource cannot send headers).

A ticket may be bound to one stream (a job's, or `/my`): then it opens that
stream's SSE and long-poll paths and no other, as often as needed within its
minute (native EventSource reconnects with the same URL). An unbound ticket
opens one stream once: it is used up by its first redemption, so a ticket
copied from a URL (a log, a history, a Referer) opens nothing. A service's
tickets are always bound: that is how a backend hands its user one stream's
URL. Tickets bought for one user are rate-limited."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time

from redis.asyncio import Redis

from hub.errors import Unauthorized
from hub.store.keys import KeySpace
from hub.store.redis_errors import store_errors
from hub.web.auth import Identity
from hub.web.rate_limit import WINDOW_SECONDS, SlidingWindowLimit

TICKET_TTL_SECONDS = 60
#: Tickets bought for one user in any minute (by the user or by a service):
#: a fresh one per connection, so this allows a reconnect every two seconds.
TICKETS_PER_MINUTE = 30
_TICKET = re.compile(r"\A[A-Za-z0-9_-]{43}\Z")
#: The stream a path follows, whichever transport: "jobs/my" or "jobs/{type}/{id}".
_STREAM = re.compile(r"\A/api/v1/(?:sse|poll)/(jobs/(?:my|[a-z][a-z0-9_-]{0,31}/[A-Za-z0-9_-]{1,64}))\Z")


def stream_of(path: str) -> str | None:
    """The stream `path` (an SSE or long-poll path) follows, or None."""
    match = _STREAM.match(path)
    return match.group(1) if match else None


class Tickets:
    def __init__(
        self, redis: Redis, keys: KeySpace, ttl: int = TICKET_TTL_SECONDS, per_minute: int = TICKETS_PER_MINUTE
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._minting = SlidingWindowLimit(
            redis,
            keys.ticket_rate,
            per_minute,
            window_seconds=WINDOW_SECONDS,
            refusal="too many stream tickets bought this minute",
        )

    @store_errors
    async def issue(self, identity: Identity, stream: str | None = None) -> tuple[str, int]:
        """A new ticket for `identity` (bound to `stream` if given, see
        `stream_of`), and how many seconds it is valid; RateLimited when too
        many were bought for the user in the last minute."""
        await self._minting.check(identity.user)
        ticket = secrets.token_urlsafe(32)
        # Never valid beyond the token it stands for.
        ttl = max(1, min(self._ttl, int(identity.expires_at - time.time())))
        record = json.dumps({"user": identity.user, "exp": identity.expires_at, "stream": stream})
        await self._redis.set(self._keys.ticket(_digest(ticket)), record, ex=ttl)
        return ticket, ttl

    @store_errors
    async def redeem(self, ticket: str, path: str) -> Identity:
        """Who the ticket stands for, if it opens `path`."""
        if not _TICKET.match(ticket):
            raise Unauthorized("invalid ticket")
        key = self._keys.ticket(_digest(ticket))
        record = await self._redis.get(key)
        if record is None:
            raise Unauthorized("unknown, used or expired ticket")
        data = json.loads(record)
        bound = data.get("stream")
        if bound is None:
            # Of several requests racing with one unbound ticket, GETDEL lets one in.
            if await self._redis.getdel(key) is None:
                raise Unauthorized("unknown, used or expired ticket")
        elif bound != stream_of(path):
            raise Unauthorized("this ticket opens another stream")
        return Identity(user=str(data["user"]), expires_at=float(data["exp"]))


def _digest(ticket: str) -> str:
    # Stored by hash: whoever reads Redis cannot use the tickets in it.
    return hashlib.sha256(ticket.encode()).hexdigest()
