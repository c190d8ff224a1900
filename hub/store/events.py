"""Events as they travel from Redis to clients, and their Server-Sent Events framing."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from hub.errors import BadRequest
from hub.store.wire import ACTIVE, Message

# Redis stream ids: "<milliseconds>-<sequence>", two unsigned 64-bit numbers
# in ASCII digits (\d would take any Unicode digit).
_CURSOR = re.compile(r"\A([0-9]{1,20})-([0-9]{1,20})\Z")
_ID_PART_MAX = 2**64 - 1
_FRAME_BREAKS = re.compile(r"\r\n|\r|\n")

Cursor = tuple[int, int]
#: The cursor before any event: "0-0".
BEGINNING: Cursor = (0, 0)

KEEPALIVE_FRAME = b": keepalive\n\n"
#: How "active" reads in an event's JSON.
_ACTIVE_JSON = json.dumps(ACTIVE)


def parse_cursor(raw: str) -> Cursor:
    match = _CURSOR.match(raw)
    if match:
        cursor = int(match.group(1)), int(match.group(2))
        # Beyond 64 bits Redis refuses the id: a 400 here, not a 500 later.
        if max(cursor) <= _ID_PART_MAX:
            return cursor
    raise BadRequest("malformed cursor: expected an event id such as 1732450000000-0")


def format_cursor(cursor: Cursor) -> str:
    return f"{cursor[0]}-{cursor[1]}"


@dataclass(frozen=True, slots=True)
class Event:
    """One message for clients: its JSON text, its cursor (if it has one) and
    when the actor published it (for the delivery-latency histogram)."""

    data: str
    id: str | None = None
    published_at: float | None = None
    #: The job's last event: completed or failed.
    terminal: bool = False
    cursor: Cursor | None = field(default=None, compare=False)
    #: The SSE frame, encoded once for every subscriber that gets the event.
    frame: bytes = field(init=False, compare=False, repr=False)
    _chunk: bytes | None = field(default=None, init=False, compare=False, repr=False)
    #: `progress_job`, once asked: "" for an event that is not progress.
    _progress_job: str | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame", encode_frame(self.data, self.id))

    @classmethod
    def stored(cls, event_id: str, data: str, published_at: float | None, terminal: bool) -> Event:
        return cls(data, event_id, published_at, terminal, parse_cursor(event_id))

    @classmethod
    def make(cls, payload: dict[str, Any], event_id: str | None = None, terminal: bool = False) -> Event:
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        cursor = parse_cursor(event_id) if event_id else None
        return cls(data, event_id, None, terminal, cursor)

    @classmethod
    def from_message(cls, message: bytes | str) -> Event:
        """Parses a pub/sub message (see `hub.store.wire.Message`)."""
        event_id, published_at, terminal, data = Message.decode(message)
        return cls.stored(event_id, data, published_at, terminal)

    def chunk(self) -> bytes:
        """The frame as one HTTP/1.1 chunk, also encoded once for all."""
        chunk = self._chunk
        if chunk is None:
            chunk = http_chunk(self.frame)
            object.__setattr__(self, "_chunk", chunk)
        return chunk

    @property
    def progress_job(self) -> str | None:
        """The job whose progress this event reports (an `active` job_update
        with an id), else None: a newer one of the same job may replace it
        in a slow client's queue. Read from `data` when first asked, once
        for every subscriber: only a client that has fallen behind asks."""
        job = self._progress_job
        if job is None:
            job = _progress_job_of(self)
            object.__setattr__(self, "_progress_job", job)
        return job or None

    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value


def _progress_job_of(event: Event) -> str:
    # A cheap look first: JSON that never says "active" is not progress.
    if event.terminal or event.id is None or event.cursor is None or _ACTIVE_JSON not in event.data:
        return ""
    try:
        payload = json.loads(event.data)
    except ValueError:
        return ""
    if not isinstance(payload, dict) or payload.get("type") != "job_update" or payload.get("status") != ACTIVE:
        return ""
    job = payload.get("jobId")
    return job if isinstance(job, str) else ""


def encode_frame(data: str, event_id: str | None = None) -> bytes:
    """One SSE frame. Line breaks in `data` become separate `data:` lines and
    are removed from `id`, so no input can end a frame early or forge a field."""
    lines = []
    if event_id is not None:
        clean_id = _FRAME_BREAKS.sub("", event_id).replace("\0", "")
        lines.append(f"id: {clean_id}")
    for line in _FRAME_BREAKS.split(data):
        lines.append(f"data: {line}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def http_chunk(data: bytes) -> bytes:
    """`data` as one chunk of an HTTP/1.1 chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def retry_frame(retry_ms: int) -> bytes:
    return f"retry: {int(retry_ms)}\n\n".encode()
