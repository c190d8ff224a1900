"""An incremental Server-Sent Events parser, following the WHATWG HTML
"event stream interpretation": bytes in, frames out, whatever the chunking.

Network chunks split lines and even line breaks (a "\\r" may end one chunk
and its "\\n" start the next), so the parser keeps the unfinished tail
between calls. Every buffer is bounded: a hub that never ends a line or a
frame cannot make the client grow without limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub_client.errors import ProtocolError

#: Large enough for any event the hub sends (a result is a few KB).
DEFAULT_MAX_LINE_BYTES = 1 << 20
DEFAULT_MAX_FRAME_CHARS = 1 << 20

_LINE_BREAK = re.compile(rb"[\r\n]")
_CR = 0x0D
_LF = 0x0A
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class Frame:
    """One dispatched event: its data (the `data:` lines joined with "\\n"),
    the `id:` field of this very frame (None if it had none) and its `event:`
    name. Unlike EventSource's lastEventId, the id does not carry over from
    earlier frames: the client must know which frames (the hub's `connected`
    and `reset`) have no cursor of their own."""

    data: str
    id: str | None = None
    event: str | None = None


class LineSplitter:
    """Cuts a byte stream into lines ended by "\\r\\n", "\\n" or "\\r"."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._buffer = bytearray()
        # A chunk ended with "\r": if the next one starts with "\n", that
        # "\n" belongs to the same line break.
        self._after_cr = False

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._after_cr and chunk:
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        self._buffer += chunk
        lines: list[bytes] = []
        start = 0
        while (found := _LINE_BREAK.search(self._buffer, start)) is not None:
            end = found.start()
            lines.append(bytes(self._buffer[start:end]))
            start = self._skip_break(end)
        del self._buffer[:start]
        if any(len(line) > self._max for line in lines) or len(self._buffer) > self._max:
            raise ProtocolError(f"an event-stream line is longer than {self._max} bytes")
        return lines

    def _skip_break(self, end: int) -> int:
        """The index after the line break at `end`."""
        if self._buffer[end] == _LF:
            return end + 1
        if end + 1 < len(self._buffer):
            return end + 2 if self._buffer[end + 1] == _LF else end + 1
        self._after_cr = True
        return end + 1


class SSEParser:
    """Turns lines into frames. `retry_ms` holds the latest valid `retry:`."""

    def __init__(
        self,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_frame_chars: int = DEFAULT_MAX_FRAME_CHARS,
    ) -> None:
        self._lines = LineSplitter(max_line_bytes)
        self._max_frame = max_frame_chars
        self._first_line = True
        self.retry_ms: int | None = None
        self._reset_frame()

    def _reset_frame(self) -> None:
        self._data: list[str] = []
        self._size = 0
        self._id: str | None = None
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[Frame]:
        frames: list[Frame] = []
        for raw in self._lines.feed(chunk):
            frame = self._line(raw.decode("utf-8", errors="replace"))
            if frame is not None:
                frames.append(frame)
        return frames

    def _line(self, line: str) -> Frame | None:
        if self._first_line:
            # The spec lets a stream start with a byte-order mark.
            self._first_line = False
            line = line.removeprefix(_BOM)
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment, such as the hub's keepalive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        self._field(name, value)
        return None

    def _field(self, name: str, value: str) -> None:
        if name == "data":
            self._size += len(value) + 1
            if self._size > self._max_frame:
                raise ProtocolError(f"an event is larger than {self._max_frame} characters")
            self._data.append(value)
        elif name == "id":
            # The spec ignores an id holding NUL: it could not be sent back.
            if "\0" not in value:
                self._id = value
        elif name == "event":
            self._event = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        # Unknown fields are ignored, as the spec asks.

    def _dispatch(self) -> Frame | None:
        """A blank line ends a frame; one without data dispatches nothing."""
        frame = None
        if self._data:
            frame = Frame("\n".join(self._data), self._id, self._event)
        self._reset_frame()
        return frame
