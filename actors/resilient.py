"""Job events from workers must survive a Redis hiccup: a progress report or
a completion that cannot be recorded is tried again for a while, instead of
failing the job or leaving it `active` for ever."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from hub.errors import StoreUnavailable

log = logging.getLogger("actors.resilient")

T = TypeVar("T")

#: How long a worker keeps trying to record one job event.
RETRY_FOR_SECONDS = 30.0
DELAY_MIN = 0.05
DELAY_MAX = 2.0


def with_retries(call: Callable[[], T]) -> T:
    """Runs `call` (of the store), again while Redis does not answer, for up
    to `RETRY_FOR_SECONDS`."""
    deadline = time.monotonic() + RETRY_FOR_SECONDS
    delay = DELAY_MIN
    while True:
        try:
            return call()
        except StoreUnavailable as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis unavailable (%s); retrying in %.2fs", exc, delay)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, DELAY_MAX)
