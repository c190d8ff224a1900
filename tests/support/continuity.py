"""Clients that follow a stream through failures, as a browser does, and
the check that what each received is true to the stream's final history:
every event once, in order, or a `reset` where history was lost; never a
silent gap. tests/test_sentinel.py states the rule in full."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.http import bearer, request
from tests.support.jobs import TERMINAL
from tests.support.sse import Frame

#: A client hears nothing for this long: it takes the stream for dead and reconnects.
READ_TIMEOUT = 10.0
#: Until the hub announces its own `retry:`, a client waits this long between attempts.
DEFAULT_RETRY_SECONDS = 0.25

Cursor = tuple[int, int]


def cursor(event_id: str) -> Cursor:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


@dataclass
class Watch:
    """One client following `path` on one hub: the frames it got in order
    (None where a `reset` came, then the reset itself when it carries an
    id), and when each came."""

    hub: str
    path: str
    token: str
    frames: list[Frame | None] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    connects: int = 0
    refusals: int = 0
    ended: bool = False

    @property
    def follows_a_job(self) -> bool:
        return not self.path.endswith("/my")

    @property
    def last_cursor(self) -> Cursor | None:
        ids = [frame.id for frame in self.frames if frame is not None and frame.id]
        return cursor(ids[-1]) if ids else None

    def resets(self) -> int:
        return self.frames.count(None)

    def longest_silence(self, start: float, end: float) -> float:
        """The longest time between two events (or `start`/`end`) within the window."""
        times = [start, *(t for t in self.arrivals if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(times))


async def follow(watch: Watch) -> None:
    """Follows until the job's end (a job's stream) or until cancelled
    (`/my`), reconnecting after any drop, refusal or error with the last id
    it got, after the `retry` the hub announced."""
    last_id: str | None = None
    retry = DEFAULT_RETRY_SECONDS
    while not watch.ended:
        headers = bearer(watch.token, {"Last-Event-ID": last_id} if last_id else None)
        try:
            response = await request(watch.hub + watch.path, headers=headers, timeout=5)
        except (OSError, TimeoutError, ValueError):
            await asyncio.sleep(retry)
            continue
        try:
            if response.status == 204:
                watch.ended = True
                return
            if response.status != 200:
                watch.refusals += 1
            else:
                watch.connects += 1
                last_id, retry = await _read(watch, response, last_id, retry)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            pass  # dropped mid-stream: resume
        finally:
            response.close()
        if not watch.ended:
            await asyncio.sleep(retry)


async def _read(watch: Watch, response: Any, last_id: str | None, retry: float) -> tuple[str | None, float]:
    while (frame := await response.frame(timeout=READ_TIMEOUT)) is not None:
        if frame.retry is not None:
            retry = frame.retry / 1000
        if frame.type == "reset":
            watch.frames.append(None)
            watch.arrivals.append(time.monotonic())
            if frame.id:
                # No state follows this reset (no job is open): its id is
                # where the client stands, the next segment's starting point.
                watch.frames.append(frame)
                watch.arrivals.append(time.monotonic())
                last_id = frame.id
        elif frame.type in ("initial_status", "job_update"):
            watch.frames.append(frame)
            watch.arrivals.append(time.monotonic())
            last_id = frame.id or last_id
            if watch.follows_a_job and frame.data.get("status") in TERMINAL:
                watch.ended = True
                break
    return last_id, retry


@dataclass(frozen=True)
class Entry:
    """One entry of a stream's final history."""

    id: str
    data: dict[str, Any]


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    #: Updates the client got that the final history lacks (lost in the failover).
    lost_seen: int = 0
    #: Where the client went on after lost history without a reset: its view
    #: keeps events that no longer happened (the lost id, the next one).
    unreset: list[tuple[str, str]] = field(default_factory=list)
    resets: int = 0
    updates: int = 0


def check(frames: Sequence[Frame | None], history: Sequence[Entry]) -> Verdict:
    """Applies the rule of tests/test_sentinel.py to what one client got."""
    verdict = Verdict(resets=frames.count(None))
    index = {entry.id: i for i, entry in enumerate(history)}
    seen_before: set[str] = set()
    segments = _segments(frames)
    for number, segment in enumerate(segments):
        anchor, updates = _split(segment, number == 0, verdict)
        verdict.updates += len(updates)
        _check_states(segment, anchor, history, index, verdict)
        ids = [frame.id or "" for frame in updates]
        if any(cursor(b) <= cursor(a) for a, b in itertools.pairwise(ids)):
            verdict.violations.append(f"segment {number}: ids not strictly increasing: {ids}")
        if anchor is not None and ids and cursor(ids[0]) <= cursor(anchor):
            verdict.violations.append(f"segment {number}: {ids[0]} is not after its starting point {anchor}")
        known = [i for i in ids if i in index]
        verdict.lost_seen += len(ids) - len(known)
        _check_reset_after_loss(anchor, ids, index, verdict)
        if twice := seen_before.intersection(known):
            verdict.violations.append(f"segment {number}: seen again after a reset: {sorted(twice)}")
        seen_before.update(known)
        start = _start(anchor, known, history, index)
        expected = [entry.id for entry in history[start : start + len(known)]]
        if known != expected:
            verdict.violations.append(f"segment {number}: got {known}, history has {expected} there")
        if number == len(segments) - 1:
            end = known[-1] if known else anchor
            if history and end != history[-1].id:
                verdict.violations.append(f"the client stopped at {end}; history ends at {history[-1].id}")
    return verdict


def _segments(frames: Sequence[Frame | None]) -> list[list[Frame]]:
    """Frames split at each reset, and where a fresh state follows updates
    (a new connection without a cursor)."""
    segments: list[list[Frame]] = [[]]
    for frame in frames:
        if frame is None:
            segments.append([])
            continue
        current = segments[-1]
        if frame.type == "initial_status" and current and current[-1].type == "job_update":
            segments.append(current := [])
        current.append(frame)
    return segments


def _split(segment: list[Frame], first: bool, verdict: Verdict) -> tuple[str | None, list[Frame]]:
    """The point the segment's state was taken at (None: unknown), and its updates."""
    states = [frame for frame in segment if frame.type == "initial_status"]
    updates = [frame for frame in segment if frame.type == "job_update"]
    if not states and segment and segment[0].type == "reset":
        return segment[0].id, updates
    if states:
        anchors = {frame.id for frame in states}
        if len(anchors) != 1:
            verdict.violations.append(f"one state, several points in the stream: {sorted(map(str, anchors))}")
        return states[0].id, updates
    return ("0-0" if first else None), updates


def _check_states(
    segment: list[Frame], anchor: str | None, history: Sequence[Entry], index: dict[str, int], verdict: Verdict
) -> None:
    """Each initial_status shows its job's latest `step` as of the anchor."""
    if anchor is None or anchor not in index:
        return
    for frame in segment:
        if frame.type != "initial_status":
            continue
        job_id = frame.data.get("jobId")
        # The state keeps the last `step` any event set (a terminal event has none).
        steps = [
            e.data["step"] for e in history[: index[anchor] + 1] if e.data.get("jobId") == job_id and "step" in e.data
        ]
        if steps and frame.data.get("step") != steps[-1]:
            verdict.violations.append(f"initial_status of {job_id} at {anchor} shows {frame.data.get('step')}")


def _check_reset_after_loss(anchor: str | None, ids: list[str], index: dict[str, int], verdict: Verdict) -> None:
    """History the client holds (its starting state, or updates) that the
    final history lacks must be followed by a reset, not by more updates."""
    lost = anchor if anchor not in (None, "0-0") and anchor not in index else None
    for event_id in ids:
        if event_id not in index:
            lost = event_id
        elif lost is not None:
            verdict.unreset.append((lost, event_id))
            return


def _start(anchor: str | None, known: list[str], history: Sequence[Entry], index: dict[str, int]) -> int:
    """Where in history the segment's updates must begin."""
    if anchor is None:
        return index[known[0]] if known else 0
    if anchor in index:
        return index[anchor] + 1
    after = [i for i, entry in enumerate(history) if cursor(entry.id) > cursor(anchor)]
    return after[0] if after else len(history)
