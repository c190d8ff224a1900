"""Which local subscribers follow which channel: the bus's registry, kept
apart from Redis so that it can be read and tested on its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Channels(Generic[T]):
    """Subscribers by channel. `add` says whether the channel is new (Redis
    must be asked for it) and `remove` whether it is now empty (Redis may
    forget it)."""

    __slots__ = ("_members",)

    def __init__(self) -> None:
        # One member alone (a job followed by one stream, the common case) is
        # held as itself: a set per channel would cost a couple of hundred
        # bytes per connection.
        self._members: dict[str, T | set[T]] = {}

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, channel: str) -> bool:
        return channel in self._members

    def add(self, channel: str, member: T) -> bool:
        present = self._members.get(channel)
        if present is None:
            self._members[channel] = member
            return True
        if isinstance(present, set):
            present.add(member)
        elif present is not member:
            self._members[channel] = {present, member}
        return False

    def remove(self, channel: str, member: T) -> bool:
        present = self._members.get(channel)
        if isinstance(present, set):
            present.discard(member)
            if len(present) == 1:
                self._members[channel] = next(iter(present))
            return False
        if present is None or present is not member:
            return False
        del self._members[channel]
        return True

    def members(self, channel: str) -> tuple[T, ...]:
        """A snapshot: members may leave while they are being visited."""
        present = self._members.get(channel)
        if present is None:
            return ()
        return tuple(present) if isinstance(present, set) else (present,)

    def clear(self) -> Iterator[T]:
        """Empties the registry, yielding each member once per channel it was in."""
        members, self._members = self._members, {}
        for present in members.values():
            yield from present if isinstance(present, set) else (present,)
