"""What a client must end with after Redis failed over underneath the hub:
every event of the final history exactly once and in order, or a `reset`
and a fresh `initial_status` where history was lost. Never a silent gap,
never a duplicate.

A `Recorder` follows one stream as a browser does (reconnecting with its
last id, to each hub in turn) and notes every frame with the time it came.
`check` judges what it saw against the stream's history as Redis holds it
at the end:

- event ids never repeat and only grow, across reconnects and resets;
- between two consecutive positions of one segment (an event's id, or the
  position an `initial_status` reports), history holds no entry the client
  did not get: such an entry would be a silent gap. Entries Redis lost in
  the failover are not in the final history; a client may have got them or
  not, and either is fine;
- after a `reset`, the next frame is an `initial_status`;
- in the end the client is past the last entry of history.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from tests.support.http import request
from tests.support.sse import Frame

Position = tuple[int, int]
_POSITION = re.compile(r"\A([0-9]+)-([0-9]+)")


def position(event_id: str) -> Position:
    """The stream position an id stands for (a snapshot cursor's head too)."""
    match = _POSITION.match(event_id)
    if not match:
        raise AssertionError(f"not an event id: {event_id!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass
class Seen:
    kind: str  # "reset", "initial_status" or "event"
    id: str | None
    at: float  # time.monotonic() on arrival
    data: dict | None = None


@dataclass
class Recorder:
    """Follows `path` on `hubs` with `token` until `done()` says so."""

    hubs: list[str]
    path: str
    token: str
    seen: list[Seen] = field(default_factory=list)
    connects: int = 0
    last_id: str | None = None

    @property
    def events(self) -> list[Seen]:
        return [item for item in self.seen if item.kind == "event"]

    @property
    def resets(self) -> int:
        return sum(1 for item in self.seen if item.kind == "reset")

    async def run(self, done: asyncio.Event, terminal_ends: bool) -> None:
        attempt = 0
        while not done.is_set():
            base = self.hubs[attempt % len(self.hubs)]
            attempt += 1
            headers = {"Authorization": f"Bearer {self.token}"}
            if self.last_id:
                headers["Last-Event-ID"] = self.last_id
            try:
                response = await request(base + self.path, headers=headers, timeout=5)
            except (TimeoutError, OSError):
                await asyncio.sleep(0.05)  # a hub is restarting or refusing: back off briefly
                continue
            if response.status == 204:
                response.close()
                return
            if response.status != 200:
                response.close()
                await asyncio.sleep(0.05)
                continue
            self.connects += 1
            try:
                while not done.is_set():
                    frame = await response.frame(timeout=1.0)
                    if frame is None:
                        break
                    if self._note(frame) and terminal_ends:
                        return
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                pass  # dropped, or quiet for a second: reconnect
            finally:
                response.close()

    def _note(self, frame: Frame) -> bool:
        """Records a frame; True once the job's terminal event came."""
        if frame.data is None or frame.type in ("connected", "token_expired"):
            return False
        now = time.monotonic()
        if frame.type == "reset":
            self.seen.append(Seen("reset", None, now))
            return False
        kind = "initial_status" if frame.type == "initial_status" else "event"
        self.seen.append(Seen(kind, frame.id, now, frame.data))
        if frame.id:
            self.last_id = frame.id
        return kind == "event" and frame.data.get("status") in ("completed", "failed")


def check(recorder: Recorder, history: list[str]) -> list[str]:
    """What is wrong with what `recorder` saw, against the final `history`
    (the stream's entry ids, oldest first); empty when all is well."""
    kept = [position(entry) for entry in history]
    problems: list[str] = []
    seen_ids: set[str] = set()
    at: Position | None = None
    after_reset = False
    last_event: Position | None = None
    for item in recorder.seen:
        if item.kind == "reset":
            after_reset, at = True, None
            continue
        if after_reset and item.kind != "initial_status":
            problems.append(f"{item.id}: a reset not followed by initial_status")
        after_reset = False
        if item.id is None:
            continue
        here = position(item.id)
        if item.kind == "initial_status":
            at = here
            continue
        if item.id in seen_ids:
            problems.append(f"{item.id}: delivered twice")
        seen_ids.add(item.id)
        if last_event is not None and here <= last_event:
            problems.append(f"{item.id}: out of order after {last_event}")
        if at is not None:
            missed = [entry for entry in kept if at < entry < here]
            if missed:
                problems.append(f"{item.id}: silent gap of {len(missed)} kept events after {at}")
        at = last_event = here
    if kept and (at is None or at < kept[-1]):
        problems.append(f"ends at {at}, history goes on to {kept[-1]}")
    return problems


def longest_silence(recorders: list[Recorder], start: float, end: float) -> float:
    """The longest time any recorder went without an event across [start, end]."""
    longest = 0.0
    for recorder in recorders:
        times = [item.at for item in recorder.seen if item.kind != "reset"]
        before = [t for t in times if t <= start]
        after = [t for t in times if t > start]
        previous = before[-1] if before else start
        for moment in after:
            longest = max(longest, moment - previous)
            previous = moment
            if moment > end:
                break
    return longest
