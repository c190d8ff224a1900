"""A test client that follows a job as a well-behaved SSE client does: on any
drop, refusal or error it reconnects with its last id, trying each hub in
turn, until the job's terminal event. It records what it saw so a test can
check that nothing was lost or repeated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.http import request
from tests.support.jobs import TERMINAL
from tests.support.sse import Frame


@dataclass
class Followed:
    events: list[Frame] = field(default_factory=list)
    connects: int = 0
    refusals: list[int] = field(default_factory=list)
    resets: int = 0
    retries_announced: list[int] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.events if event.id]

    @property
    def final(self) -> Frame:
        return self.events[-1]


async def follow(
    hubs: list[str],
    path: str,
    token: str,
    *,
    timeout: float = 60.0,
    on_event: Callable[[Frame, Followed], Any] | None = None,
    last_event_id: str | None = None,
) -> Followed:
    """Follows `path` through `hubs` (base URLs, tried in turn) until the end,
    from `last_event_id` if given."""
    seen = Followed()
    last_id = last_event_id
    deadline = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < deadline:
        base = hubs[attempt % len(hubs)]
        attempt += 1
        headers = {"Authorization": f"Bearer {token}"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        try:
            response = await request(base + path, headers=headers, timeout=5)
        except OSError:
            await asyncio.sleep(0.1)  # nobody listening there (yet): back off briefly
            continue
        if response.status == 204:
            return seen
        if response.status != 200:
            seen.refusals.append(response.status)
            response.close()
            await asyncio.sleep(0.1)
            continue
        seen.connects += 1
        try:
            while (frame := await response.frame(timeout=deadline - time.monotonic())) is not None:
                if frame.data is None:
                    if frame.retry is not None:
                        seen.retries_announced.append(frame.retry)
                    continue
                if frame.type == "reset":
                    seen.resets += 1
                if frame.type in ("connected", "reset", "token_expired"):
                    continue
                seen.events.append(frame)
                last_id = frame.id or last_id
                if on_event is not None:
                    result = on_event(frame, seen)
                    if asyncio.iscoroutine(result):
                        await result
                if frame.data.get("status") in TERMINAL:
                    response.close()
                    return seen
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass  # dropped mid-stream: resume
        finally:
            response.close()
    raise AssertionError(f"the job did not end within {timeout}s; saw {[e.data for e in seen.events]}")
