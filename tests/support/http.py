"""A small HTTP/1.1 client on raw asyncio sockets, for tests: it reads SSE
streams frame by frame as they arrive, can hang up at any moment, and never
buffers more than it was asked for. `Api` calls the hub as a user would."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.support.sse import EventReader, Frame

DEFAULT_TIMEOUT = 20.0


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    _body_done: bool = False
    _events: EventReader = field(default_factory=EventReader)
    _pending: list[Frame] = field(default_factory=list)

    @property
    def comments(self) -> list[str]:
        """The stream's comment lines read so far, in order."""
        return self._events.comments

    async def body(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        chunks: list[bytes] = []
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
        """The next SSE frame (a block with data, or one that only announces
        `retry`); None when the stream ends."""
        while not self._pending:
            if not await self._read_more(timeout):
                return None
        return self._pending.pop(0)

    async def comment(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Waits for the next comment line (such as a keepalive)."""
        seen = len(self.comments)
        while len(self.comments) == seen:
            if not await self._read_more(timeout):
                raise EOFError("the stream ended")
        return self.comments[seen]

    async def _read_more(self, timeout: float) -> bool:
        """Reads one more piece of the body; False at its end."""
        chunk = await asyncio.wait_for(self._read_chunk(), timeout)
        if chunk is None:
            return False
        self._pending += self._events.feed(chunk)
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
        self.writer.transport.abort()


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


def bearer(token: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Headers that carry `token` (and `extra`)."""
    return {"Authorization": f"Bearer {token}", **(extra or {})}


class Api:
    """Calls the hub as a user (or a service) would."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token

    def auth(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return bearer(self.token, extra)

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        response = await request(
            self.base_url + path,
            method="POST",
            headers=self.auth({"Content-Type": "application/json"}),
            body=json.dumps(body).encode(),
        )
        return response.status, await response.json_body()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return await request(self.base_url + path, headers=self.auth(headers))

    async def create_character(self, name: str = "Ada", description: str = "curious and brave") -> str:
        status, body = await self.post("/api/v1/characters", {"name": name, "description": description})
        assert status == 202, body
        return str(body["jobId"])

    async def create_image(self, prompt: str = "a fox at dawn", width: int = 96, height: int = 64) -> str:
        status, body = await self.post("/api/v1/media/images", {"prompt": prompt, "width": width, "height": height})
        assert status == 202, body
        return str(body["jobId"])

    async def send(self, path: str, headers: dict[str, str] | None = None) -> Sent:
        """Sends a GET without waiting for its answer (a held long-poll)."""
        return await send(self.base_url + path, headers=self.auth(headers))

    async def stream(self, path: str, last_event_id: str | None = None) -> Response:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        return await self.get(path, headers)
