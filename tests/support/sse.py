"""Reading the hub's event streams with the SSE parser the Python client
ships (hub_client.sse), so the tests and the client read streams alike.

On top of the parser, tests see what a client does not need: the blocks that
only announce `retry:`, and comments such as the hub's keepalives."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hub_client.sse import LineSplitter, SSEParser


@dataclass(frozen=True)
class Frame:
    """One block of a stream: its data as JSON (None for a block that only
    announces `retry`), its own id, and the retry it announced, if any."""

    data: Any
    id: str | None = None
    retry: int | None = None

    @property
    def type(self) -> str | None:
        return self.data.get("type") if isinstance(self.data, dict) else None


class EventReader:
    """Bytes in, frames out, whatever the chunking; comments are kept in
    `comments`, in order."""

    def __init__(self) -> None:
        # Lines first, so that comments and the end of each block are seen;
        # every line then goes to the client's parser, which reads the fields.
        self._lines = LineSplitter()
        self._parser = SSEParser()
        self._retry: int | None = None
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[Frame]:
        frames: list[Frame] = []
        for line in self._lines.feed(chunk):
            if line.startswith(b":"):
                self.comments.append(line[1:].decode("utf-8", errors="replace").strip())
            # The parser's retry_ms is the latest retry it saw: cleared here,
            # it tells whether this very line announced one.
            self._parser.retry_ms = None
            dispatched = self._parser.feed(line + b"\n")
            if self._parser.retry_ms is not None:
                self._retry = self._parser.retry_ms
            if line:
                continue
            if dispatched:
                frames += [Frame(json.loads(f.data), f.id, self._retry) for f in dispatched]
            elif self._retry is not None:
                frames.append(Frame(None, retry=self._retry))
            self._retry = None
        return frames


def parse_events(stream: bytes | str) -> list[Frame]:
    """Every frame in a whole stream body."""
    return EventReader().feed(stream.encode() if isinstance(stream, str) else stream)
