"""Just enough HTTP/1.1 and Server-Sent Events parsing for the load generator.

A general HTTP client would cost more CPU per event than the hub spends
sending it, and the load generator shares one core with Redis and the
publisher; so this reads exactly what the servers under test send: a status
line and headers, then a body framed by Content-Length, chunked encoding, or
the end of the connection.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: dict[str, str]


def parse_head(raw: bytes) -> Head:
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Head(status, headers)


def retry_after(head: Head) -> float:
    """The Retry-After of a refusal, in seconds (0 when absent)."""
    try:
        return float(head.headers.get("retry-after", "0"))
    except ValueError:
        return 0.0


class ResponseReader:
    """Reads one HTTP/1.1 response at a time from a byte stream; `next_response`
    starts on the following one (keep-alive)."""

    def __init__(self) -> None:
        self._buf = b""
        self.next_response()

    def next_response(self) -> None:
        self.head: Head | None = None
        self.complete = False
        self._remaining: int | None = None  # Content-Length bytes still to come
        self._chunked = False
        self._chunk_left = 0  # data bytes left in the current chunk
        self._in_chunk = False

    def feed(self, data: bytes) -> list[bytes]:
        """Body bytes found in `data` (maybe none); sets `head` and `complete`."""
        self._buf += data
        if self.head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return []
            self.head = parse_head(self._buf[:end])
            self._buf = self._buf[end + 4 :]
            encoding = self.head.headers.get("transfer-encoding", "").lower()
            self._chunked = "chunked" in encoding
            if self.head.status in (204, 304) or 100 <= self.head.status < 200:
                self._remaining = 0
            elif not self._chunked and "content-length" in self.head.headers:
                self._remaining = int(self.head.headers["content-length"])
        if self.complete:
            return []
        if self._chunked:
            return self._dechunk()
        if self._remaining is None:  # body ends with the connection
            body, self._buf = self._buf, b""
            return [body] if body else []
        body = self._buf[: self._remaining]
        self._buf = self._buf[self._remaining :]
        self._remaining -= len(body)
        self.complete = self._remaining == 0
        return [body] if body else []

    def _dechunk(self) -> list[bytes]:
        out = []
        buf = self._buf
        while buf:
            if self._in_chunk:
                piece = buf[: self._chunk_left]
                buf = buf[len(piece) :]
                self._chunk_left -= len(piece)
                out.append(piece)
                if self._chunk_left:
                    break
                self._in_chunk = False
                continue
            # Between chunks: the CRLF closing the previous chunk, then a size line.
            if buf.startswith(b"\r\n"):
                buf = buf[2:]
                continue
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                break
            size = int(buf[:line_end].split(b";", 1)[0], 16)
            buf = buf[line_end + 2 :]
            if size == 0:
                self.complete = True
                buf = buf[2:] if buf.startswith(b"\r\n") else buf  # no trailers are sent
                break
            self._chunk_left = size
            self._in_chunk = True
        self._buf = buf
        return out


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE frame: its `id` (or None), its data lines joined, and whether
    it was only a comment (a keepalive)."""

    id: bytes | None
    data: bytes
    comment: bool


class SseDecoder:
    """Splits an event stream into frames; tolerates CRLF line ends."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf + data
        if b"\r" in buf:
            # A trailing lone "\r" stays in the buffer and pairs with the next "\n".
            buf = buf.replace(b"\r\n", b"\n")
        parts = buf.split(b"\n\n")
        self._buf = parts.pop()
        return [_frame(part) for part in parts if part]


def _frame(raw: bytes) -> Frame:
    event_id = None
    data = []
    comment = True
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            comment = False
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"id:"):
            comment = False
            event_id = line[3:].strip()
        elif not line.startswith(b":"):
            comment = False  # retry: or a field we do not use
    return Frame(event_id, b"\n".join(data), comment)


#: The `step` of every event the benchmark publishes: "<seq>@<send time ns>".
STEP_SEPARATOR = "@"


def make_step(seq: int, sent_ns: int) -> str:
    return f"{seq}{STEP_SEPARATOR}{sent_ns}"


def parse_step(step: str | bytes) -> tuple[int, int] | None:
    text = step.decode() if isinstance(step, bytes) else step
    seq, sep, sent = text.partition(STEP_SEPARATOR)
    if not sep or not seq.isdigit() or not sent.isdigit():
        return None
    return int(seq), int(sent)


def _string_field(data: bytes, name: bytes) -> bytes | None:
    start = data.find(name)
    if start < 0:
        return None
    start += len(name)
    return data[start : data.find(b'"', start)]


def benchmark_update(data: bytes) -> tuple[str, int, int] | None:
    """(job id, seq, send time ns) of a benchmark job_update frame, else None.

    Byte searches instead of json.loads: the field order of the hub's Lua
    encoder is not fixed, but each key occurs once, and this runs for every
    delivery on the load generator's core.
    """
    if b'"type":"job_update"' not in data:
        return None
    step = _string_field(data, b'"step":"')
    job = _string_field(data, b'"jobId":"')
    if step is None or job is None:
        return None
    parsed = parse_step(step)
    if parsed is None:
        return None
    return job.decode(), parsed[0], parsed[1]
