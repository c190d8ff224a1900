"""Reads job state and event history from Redis, by cursor."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from hub.store.events import BEGINNING, Cursor, Event, parse_cursor
from hub.store.keys import KeySpace
from hub.store.scripts import load_script
from hub.store.wire import FIELD_DATA, FIELD_PUBLISHED, FIELD_TERMINAL, TERMINAL_STATUSES

_DATA, _PUBLISHED, _TERMINAL = (name.encode() for name in (FIELD_DATA, FIELD_PUBLISHED, FIELD_TERMINAL))

#: Entries read from a stream per round trip while replaying.
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

    def initial_status(self, event_id: str | None = None) -> Event:
        payload = {"type": "initial_status", **_job_fields(self.state)}
        return Event.make(payload, event_id if event_id is not None else self.last_id, terminal=self.finished)


@dataclass(frozen=True)
class UserSnapshot:
    head: str | None
    open_jobs: list[dict[str, Any]]

    def initial_statuses(self) -> list[Event]:
        # Every frame shares the snapshot's cursor: each describes the job as of `head`.
        return [
            Event.make({"type": "initial_status", **_job_fields(state)}, self.head)
            for state in sorted(self.open_jobs, key=lambda s: s.get("createdAt", ""))
        ]


def _job_fields(state: dict[str, Any]) -> dict[str, Any]:
    fields = dict(state)
    fields["jobType"] = fields.pop("type", None)
    return fields


class CursorState:
    KNOWN = "known"
    EVICTED = "evicted"


class History:
    def __init__(self, redis: Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self._snapshot_user = redis.register_script(load_script("snapshot_user.lua"))

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

    async def user(self, user_id: str) -> UserSnapshot:
        keys = [self._keys.user_open_jobs(user_id), self._keys.user_events(user_id)]
        result = await self._snapshot_user(keys=keys, args=[self._keys.job("")])
        head = result[0].decode() if result[0] else None
        return UserSnapshot(head=head, open_jobs=[json.loads(item) for item in result[1:]])

    async def cursor_state(self, stream: str, cursor: Cursor) -> str:
        """Whether history still holds every event after `cursor`.

        A cursor is evicted when entries after it may have been trimmed away,
        or when it is newer than anything this stream ever held (the history
        was lost). Trimming removes the oldest entries, so any cursor older
        than the first kept entry of a trimmed stream counts as evicted.
        """
        try:
            info = await self._redis.xinfo_stream(stream)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                # Nothing was ever written: only the very beginning is known.
                return CursorState.KNOWN if cursor == BEGINNING else CursorState.EVICTED
            raise
        last_generated = _as_cursor(info.get("last-generated-id"))
        if last_generated is None or cursor > last_generated:
            return CursorState.EVICTED
        if cursor == last_generated:
            return CursorState.KNOWN
        length = int(info.get("length", 0))
        if int(info.get("entries-added", length)) > length:
            first = _as_cursor(info.get("recorded-first-entry-id")) or _first_entry(info)
            if first is None or cursor < first:
                return CursorState.EVICTED
        max_deleted = _as_cursor(info.get("max-deleted-entry-id"))
        if max_deleted is not None and cursor < max_deleted:
            return CursorState.EVICTED
        return CursorState.KNOWN

    async def after(self, stream: str, cursor: Cursor, limit: int | None = None) -> list[Event]:
        """Events strictly after `cursor`, oldest first (at most `limit`)."""
        events: list[Event] = []
        start = f"({cursor[0]}-{cursor[1]}"
        while limit is None or len(events) < limit:
            count = REPLAY_PAGE if limit is None else min(REPLAY_PAGE, limit - len(events))
            entries: list[Any] = await self._redis.xrange(stream, min=start, max="+", count=count) or []
            for entry_id, fields in entries:
                data = _text(fields[_DATA])
                terminal = fields.get(_TERMINAL) == b"1"
                events.append(Event.stored(_text(entry_id), data, float(fields[_PUBLISHED]), terminal))
            if len(entries) < count:
                break
            start = f"({events[-1].id}"
        return events


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _first_entry(info: dict[str, Any]) -> Cursor | None:
    entry = info.get("first-entry")
    return _as_cursor(entry[0]) if entry else None


def _as_cursor(value: Any) -> Cursor | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    if text == "0-0":
        return None
    return parse_cursor(text)
