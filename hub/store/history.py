"""Reads job state and event history from Redis, by cursor."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from hub.errors import BadRequest
from hub.store.events import BEGINNING, Cursor, Event, format_cursor, parse_cursor
from hub.store.keys import KeySpace
from hub.store.redis_errors import store_errors
from hub.store.scripts import load_script
from hub.store.wire import FIELD_DATA, FIELD_PUBLISHED, FIELD_TERMINAL, TERMINAL_STATUSES

_DATA, _PUBLISHED, _TERMINAL = (name.encode() for name in (FIELD_DATA, FIELD_PUBLISHED, FIELD_TERMINAL))

#: How long the order of a `/my` snapshot longer than one page is kept after
#: its last use; one read after that rebuilds it (from the jobs open then).
SNAPSHOT_ORDER_TTL_SECONDS = 120

#: Events a replaying SSE stream reads, and writes, at a time: what it holds
#: in memory for a client that does not read.
REPLAY_PAGE = 500


@dataclass(frozen=True)
class JobSnapshot:
    state: dict[str, Any]
    owner: str
    job_type: str
    last_id: str | None
    terminal_id: str | None
    #: The input the job was created with.
    job_input: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state.get("status") in TERMINAL_STATUSES

    def initial_status(self) -> Event:
        cursor = parse_cursor(self.last_id) if self.last_id else None
        return _initial_status(self.state, self.last_id, cursor, terminal=self.finished)


@dataclass(frozen=True, slots=True)
class JobAccess:
    """Whose a job is and whether it has ended: what opening its stream checks."""

    owner: str
    job_type: str
    terminal_id: str | None


@dataclass(frozen=True, slots=True)
class SnapshotCursor:
    """Where a `/my` snapshot longer than one page stands: the head of the
    user's stream it was taken at, and the last job it has reported (jobs
    come in the byte order of their ids).

    Written "<head>-<position>", e.g. `1732450000000-0-5190857315` (job "5f2c"): the
    head's two numbers, then the job id's UTF-8 bytes after a 0x01 byte, as
    one decimal number. Every frame of such a snapshot carries its own, so a
    client resumes it after the last frame it got, whichever transport it
    uses. Old clients need nothing new: they send the id back as it came,
    and those that compare ids compare the head's two numbers only, which
    every frame of the snapshot shares.
    """

    head: Cursor
    after: str

    def __str__(self) -> str:
        position = int.from_bytes(b"\x01" + self.after.encode("utf-8"), "big")
        return f"{self.head[0]}-{self.head[1]}-{position}"


#: A client's place in a stream: a cursor, or a snapshot's position.
Position = Cursor | SnapshotCursor

# Job ids are 32 characters; room for any id up to 1 KiB.
_SNAPSHOT_CURSOR = re.compile(r"\A([0-9]{1,20}-[0-9]{1,20})-([0-9]{1,2500})\Z")


def parse_position(raw: str) -> Position:
    """A cursor, or a snapshot's position (see SnapshotCursor); 400 if neither."""
    match = _SNAPSHOT_CURSOR.match(raw)
    if match is None:
        return parse_cursor(raw)
    number = int(match.group(2))
    data = number.to_bytes((number.bit_length() + 7) // 8, "big")
    try:
        if data[:1] == b"\x01":
            return SnapshotCursor(parse_cursor(match.group(1)), data[1:].decode("utf-8"))
    except UnicodeDecodeError:
        pass
    raise BadRequest("malformed cursor: not a position this hub handed out")


@dataclass(frozen=True)
class SnapshotPage:
    """Part of a stream's opening state, and where the rest of it starts."""

    events: list[Event]
    #: The point in the stream the state is taken at (None: no event yet).
    head: Cursor | None
    #: Where the next page starts; None when this was the last one.
    next: SnapshotCursor | None = None


def _job_fields(state: dict[str, Any]) -> dict[str, Any]:
    fields = dict(state)
    fields["jobType"] = fields.pop("type", None)
    return fields


class CursorState:
    KNOWN = "known"
    EVICTED = "evicted"


class History:
    """Reads the store; a Redis failure is StoreUnavailable or StoreFull."""

    def __init__(self, redis: Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self._snapshot_user = redis.register_script(load_script("snapshot_user.lua"))

    @store_errors
    async def access(self, job_id: str) -> JobAccess | None:
        """Who owns the job, its type and its terminal event, without its
        state and input: read for every stream a client opens."""
        owner, job_type, terminal_id = await self._redis.hmget(self._keys.job(job_id), ["owner", "type", "terminal_id"])
        if owner is None:
            return None
        return JobAccess(_text(owner), _text(job_type or b""), _text(terminal_id) if terminal_id else None)

    @store_errors
    async def job(self, job_id: str) -> JobSnapshot | None:
        raw = await self._redis.hgetall(self._keys.job(job_id))
        if not raw or b"state" not in raw:
            return None
        text = {_text(key): _text(value) for key, value in raw.items()}
        return JobSnapshot(
            state=json.loads(text["state"]),
            owner=text.get("owner", ""),
            job_type=text.get("type", ""),
            last_id=text.get("last_id"),
            terminal_id=text.get("terminal_id"),
            job_input=json.loads(text.get("input") or "{}"),
        )

    @store_errors
    async def jobs_of(
        self, user_id: str, limit: int, before: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The user's jobs (their states), newest first, at most `limit`, older
        than the position `before` (from a previous page); and the position
        of the next page, or None. Jobs that expired meanwhile are skipped."""
        index = self._keys.user_jobs(user_id)
        start = f"({before}" if before else "+"
        members: list[Any] = await self._redis.zrange(index, start, "-", desc=True, bylex=True, offset=0, num=limit)
        ids = [_text(member).partition(":")[2] for member in members]
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self._keys.job(job_id), ["state", "input"])
            found = await pipe.execute() if ids else []
        gone = [members[i] for i, (state, _) in enumerate(found) if state is None]
        if gone:
            await self._redis.zrem(index, *gone)
        jobs = [{**json.loads(state), "input": json.loads(raw_input or "{}")} for state, raw_input in found if state]
        next_page = _text(members[-1]).partition(":")[0] if len(members) == limit else None
        return jobs, next_page

    @store_errors
    async def user_page(self, user_id: str, start: SnapshotCursor | None, limit: int) -> SnapshotPage:
        """At most `limit` of the user's unfinished jobs, as `initial_status`
        events: the first page (`start` None) or the one after `start`.

        A snapshot that fits in its first page is all as of its head (every
        frame's id), in order of creation, as it always was. A longer one
        comes in job id order and gives each frame its own position, so that
        no job is skipped or repeated across pages, polls or reconnects.
        """
        open_jobs = self._keys.user_open_jobs(user_id)
        keys = [open_jobs, self._keys.user_events(user_id)]
        after, head_arg = ("", "") if start is None else (start.after, format_cursor(start.head))
        # The order of a long snapshot: "<open-jobs key>:order:<head>", a
        # sorted set of the ids of the jobs open at the head (see the script).
        order = f"{open_jobs}:order:"
        args: list[str | int] = [
            self._keys.job_prefix(user_id),
            limit,
            after,
            head_arg,
            order,
            SNAPSHOT_ORDER_TTL_SECONDS,
        ]
        result = await self._snapshot_user(keys=keys, args=args)
        head = parse_cursor(_text(result[0])) if result[0] else None
        more = int(result[1]) == 1
        jobs = [(_text(result[i]), json.loads(result[i + 1])) for i in range(2, len(result), 2)]
        if start is None and not more:
            jobs.sort(key=lambda job: job[1].get("createdAt", ""))
            head_id = format_cursor(head) if head else None
            return SnapshotPage([_initial_status(state, head_id, head) for _, state in jobs], head)
        at = head or BEGINNING
        events = [_initial_status(state, str(SnapshotCursor(at, job_id)), at) for job_id, state in jobs]
        return SnapshotPage(events, head, SnapshotCursor(at, jobs[-1][0]) if more else None)

    @store_errors
    async def cursor_state(self, stream: str, cursor: Cursor) -> str:
        """Whether history still holds every event after `cursor`.

        Every cursor the hub hands out for a stream names one of its entries
        (an event's id; the head of a `/my` snapshot, its newest entry then),
        or is the very beginning, `0-0`, before any event. So a cursor that
        names no entry counts as evicted, however it compares with those
        kept: trimmed away, newer than anything kept, made up, or lost in a
        failover (with asynchronous replication the replica that takes over
        may lack the newest entries, and entries appended since may already
        have passed the cursor). The beginning is known while nothing was
        trimmed or deleted from the stream, or while it does not exist.
        """
        if cursor != BEGINNING:
            entry = format_cursor(cursor)
            found: list[Any] = await self._redis.xrange(stream, min=entry, max=entry, count=1) or []
            return CursorState.KNOWN if found else CursorState.EVICTED
        try:
            info = await self._redis.xinfo_stream(stream)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return CursorState.KNOWN  # nothing was ever written, or all of it expired
            raise
        length = int(info.get("length", 0))
        if int(info.get("entries-added", length)) > length:
            return CursorState.EVICTED  # trimmed: the oldest entries are gone
        if _as_cursor(info.get("max-deleted-entry-id")) is not None:
            return CursorState.EVICTED
        return CursorState.KNOWN

    @store_errors
    async def after(self, stream: str, cursor: Cursor, limit: int) -> tuple[list[Event], bool]:
        """At most `limit` events strictly after `cursor`, oldest first, in
        one read (a caller takes what it can send before it reads on); and
        whether history still holds every event after `cursor`."""
        # Read from the cursor's own entry: while it is kept, so is everything
        # after it (trimming removes the oldest entries), and one read says so.
        entries: list[Any] = await self._redis.xrange(stream, min=format_cursor(cursor), max="+", count=limit + 1) or []
        if entries and _as_cursor(entries[0][0]) == cursor:
            return _stored(entries[1:]), True
        if cursor != BEGINNING:
            return _stored(entries[:limit]), False  # it names no entry (see cursor_state)
        # The beginning: the stream says whether anything was trimmed. Asked
        # after the read, so that a trim during it is seen.
        kept = await self.cursor_state(stream, cursor) == CursorState.KNOWN
        return _stored(entries[:limit]), kept


def _stored(entries: list[Any]) -> list[Event]:
    return [
        Event.stored(_text(key), _text(fields[_DATA]), float(fields[_PUBLISHED]), fields.get(_TERMINAL) == b"1")
        for key, fields in entries
    ]


def _initial_status(
    state: dict[str, Any], event_id: str | None, cursor: Cursor | None, *, terminal: bool = False
) -> Event:
    # Built directly: a snapshot position is an id, but not a stream cursor.
    data = json.dumps({"type": "initial_status", **_job_fields(state)}, separators=(",", ":"), ensure_ascii=False)
    return Event(data, event_id, None, terminal, cursor)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _as_cursor(value: Any) -> Cursor | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    if text == "0-0":
        return None
    return parse_cursor(text)
