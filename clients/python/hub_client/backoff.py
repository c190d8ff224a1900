"""How long to wait before trying again, and when to stop trying."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from hub_client.errors import RetriesExhausted

#: A Retry-After beyond this is treated as this: a bogus header must not
#: park the client for hours.
MAX_RETRY_AFTER = 300.0


class Backoff:
    """Delays between attempts: `base` after a success, doubling with each
    consecutive failure up to `cap`, each with random jitter so that clients
    dropped together do not return together. A Retry-After from the hub
    replaces the computed delay (capped at `max_retry_after`)."""

    def __init__(
        self, base: float, cap: float, max_retries: int | None, *, max_retry_after: float = MAX_RETRY_AFTER
    ) -> None:
        self.base = base
        self.cap = cap
        self.max_retries = max_retries
        self.max_retry_after = max_retry_after
        self.failures = 0

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self, error: BaseException | None, retry_after: float | None = None) -> float:
        """Counts a failure and returns how long to wait before the next try;
        raises RetriesExhausted (from `error`) once `max_retries` is passed."""
        self.failures += 1
        if self.max_retries is not None and self.failures > self.max_retries:
            reason = f": {error}" if error is not None else ""
            status = getattr(error, "status", None)
            body = getattr(error, "body", None)
            raise RetriesExhausted(f"gave up after {self.max_retries} retries{reason}", status, body) from error
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        return random.uniform(delay / 2, delay)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
