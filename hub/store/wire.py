"""The wire format shared by the Lua scripts, the hub and the workers: job
statuses, the fields of a history stream entry, and the pub/sub message.

Defined once, here. The Lua scripts get the same names through the prelude
that `hub.store.scripts` puts before each script, so no script spells a
status or a field name of its own.
"""

from __future__ import annotations

from typing import NamedTuple

QUEUED = "queued"
ACTIVE = "active"
RETRYING = "retrying"
COMPLETED = "completed"
FAILED = "failed"

#: A job's last status: exactly one event carries it, and streams end there.
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED})
#: Statuses of a job that a worker is running: watched for stalls.
RUNNING_STATUSES = frozenset({ACTIVE, RETRYING})
STATUSES = frozenset({QUEUED}) | RUNNING_STATUSES | TERMINAL_STATUSES

#: Fields of one history stream entry: the event's JSON, when it was
#: published (epoch seconds), and "1" if it is the job's terminal event.
FIELD_DATA = "d"
FIELD_PUBLISHED = "t"
FIELD_TERMINAL = "f"

#: A pub/sub message is these four parts joined by this separator, the JSON
#: last (it is the only part that may contain the separator).
MESSAGE_SEPARATOR = "\n"


class Message(NamedTuple):
    """One event as published on a channel."""

    event_id: str
    published_at: float
    terminal: bool
    data: str

    def encode(self) -> str:
        flag = "1" if self.terminal else "0"
        return MESSAGE_SEPARATOR.join((self.event_id, repr(self.published_at), flag, self.data))

    @classmethod
    def decode(cls, raw: bytes | str) -> Message:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        event_id, published_at, terminal, data = text.split(MESSAGE_SEPARATOR, 3)
        return cls(event_id, float(published_at), terminal == "1", data)


def lua_prelude() -> str:
    """The constants above as Lua locals, for the scripts."""
    terminal = ", ".join(f"[{_lua(s)}] = true" for s in sorted(TERMINAL_STATUSES))
    running = ", ".join(f"[{_lua(s)}] = true" for s in sorted(RUNNING_STATUSES))
    return (
        f"local TERMINAL = {{{terminal}}}\n"
        f"local RUNNING = {{{running}}}\n"
        f"local FIELD_DATA = {_lua(FIELD_DATA)}\n"
        f"local FIELD_PUBLISHED = {_lua(FIELD_PUBLISHED)}\n"
        f"local FIELD_TERMINAL = {_lua(FIELD_TERMINAL)}\n"
        f"local MESSAGE_SEPARATOR = {_lua(MESSAGE_SEPARATOR)}\n"
    )


def _lua(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
