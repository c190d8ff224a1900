"""A small HTTP/1.1 client on raw asyncio sockets, for tests: it reads SSE
streams frame by frame, can hang up at any moment, and never buffers."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 20.0


@dataclass
class Frame:
    data: Any
    id: str | None = None
    retry: int | None = None

    @property
    def type(self) -> str | None:
        return self.data.get("type") if isinstance(self.data, dict) else None


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    comments: list[str] = field(default_factory=list)
    _buffer: bytes = b""
    _body_done: bool = False
    _pending: list[Frame] = field(default_factory=list)

    async def body(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        chunks = []
        while True:
            chunk = await asyncio.wait_for(self._read_chunk(), timeout)
            if chunk is None:
                return b"".join(chunks)
            chunks.append(chunk)

    async def json_body(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        return json.loads(await self.body(timeout))

    async def _read_chunk(self) -> bytes | None:
        if self._body_done:
            return None
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            size_line = await self.reader.readline()
            if not size_line:
                self._body_done = True
                return None
            size = int(size_line.strip().split(b";")[0], 16)
            if size == 0:
                await self.reader.readline()
                self._body_done = True
                return None
            data = await self.reader.readexactly(size)
            await self.reader.readexactly(2)
            return data
        length = self.headers.get("content-length")
        self._body_done = True
        if length is not None:
            return await self.reader.readexactly(int(length)) if int(length) else None
        data = await self.reader.read()
        return data or None

    async def frame(self, timeout: float = DEFAULT_TIMEOUT) -> Frame | None:
        """The next SSE frame with data; None when the stream ends."""
        while not self._pending:
            if not await self._read_block(timeout):
                return None
        return self._pending.pop(0)

    async def comment(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Waits for the next comment line (such as a keepalive)."""
        seen = len(self.comments)
        while len(self.comments) == seen:
            if not await self._read_block(timeout):
                raise EOFError("the stream ended")
        return self.comments[seen]

    async def _read_block(self, timeout: float) -> bool:
        while b"\n\n" not in self._buffer:
            chunk = await asyncio.wait_for(self._read_chunk(), timeout)
            if chunk is None:
                return False
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\n\n", 1)
        frame = parse_frame(raw.decode("utf-8"), self.comments)
        if frame is not None:
            self._pending.append(frame)
        return True

    async def frames_until_end(self, timeout: float = DEFAULT_TIMEOUT) -> list[Frame]:
        frames = []
        while (frame := await self.frame(timeout)) is not None:
            frames.append(frame)
        return frames

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """Hangs up without a goodbye, as a crashed client would."""
        transport = self.writer.transport
        transport.abort()


def parse_frame(raw: str, comments: list[str]) -> Frame | None:
    data_lines: list[str] = []
    event_id = None
    retry = None
    for line in raw.split("\n"):
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data_lines.append(value)
        elif name == "id":
            event_id = value
        elif name == "retry":
            retry = int(value)
    if not data_lines:
        return Frame(data=None, retry=retry) if retry is not None else None
    return Frame(data=json.loads("\n".join(data_lines)), id=event_id, retry=retry)


@dataclass
class Sent:
    """A request on the wire whose answer has not been read yet."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def response(self, timeout: float = DEFAULT_TIMEOUT) -> Response:
        return await read_response(self.reader, self.writer, timeout)

    def abort(self) -> None:
        self.writer.transport.abort()


async def send(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Sent:
    parts = urlsplit(url)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), timeout)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
    await writer.drain()
    return Sent(reader, writer)


async def request(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Response:
    sent = await send(url, method, headers, body, timeout)
    return await sent.response(timeout)


async def read_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> Response:
    status_line = await asyncio.wait_for(reader.readline(), timeout)
    status = int(status_line.split()[1])
    response_headers: dict[str, str] = {}
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return Response(status, response_headers, reader, writer)
