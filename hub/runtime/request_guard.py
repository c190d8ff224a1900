"""Answers a request from its headers alone when its body must not be read:
a body on a request that takes none, or one larger than any the hub takes.
Nothing of such a body is buffered; the answer is the contract's JSON, and
the connection is closed."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, StreamClosedError

from hub.errors import BadRequest, ClientError, PayloadTooLarge
from hub.runtime.lingering import close_gently

#: Methods whose requests carry no body in this API (nor, in practice, anywhere).
NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_DIGITS = re.compile(r"[0-9]+")


def refusal(start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders, max_body: int) -> ClientError | None:
    """Why the request's body must not be read, or None."""
    length_header = headers.get("Content-Length")
    length = 0
    if length_header is not None:
        digits = length_header.strip()
        if not _DIGITS.fullmatch(digits):
            # str.isdigit() would take "²", which int() does not.
            return BadRequest("Content-Length must be a number of bytes")
        # int() of thousands of digits is slow, or refused: none is needed.
        length = int(digits) if len(digits) <= 18 else max_body + 1
    if start_line.method in NO_BODY_METHODS and (length > 0 or "Transfer-Encoding" in headers):
        return BadRequest(f"a {start_line.method} request takes no body")
    if length > max_body:
        return PayloadTooLarge(f"body larger than {max_body} bytes")
    return None


class RequestGuard(httputil.HTTPMessageDelegate):
    """Stands before the application's delegate for one request: refuses it
    when `refusal` says so, and hands it on otherwise. `on_received` is
    called once the whole request (body included) is in."""

    def __init__(
        self,
        inner: httputil.HTTPMessageDelegate,
        connection: HTTP1Connection,
        *,
        max_body: int,
        cors: Callable[[str | None], list[tuple[str, str]]],
        on_received: Callable[[], None],
    ) -> None:
        self._inner = inner
        self._connection = connection
        self._max_body = max_body
        self._cors = cors
        self._on_received = on_received

    def headers_received(
        self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        error = refusal(start_line, headers, self._max_body)
        if error is None:
            return self._inner.headers_received(start_line, headers)
        answer = _answer(error, self._cors(headers.get("Origin")), head_only=start_line.method == "HEAD")
        # Taken from Tornado, which would otherwise read the body next.
        return _refuse(self._connection.detach(), answer)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        self._on_received()
        self._inner.finish()

    def on_connection_close(self) -> None:
        self._inner.on_connection_close()


def _answer(error: ClientError, extra_headers: list[tuple[str, str]], *, head_only: bool) -> bytes:
    body = json.dumps(error.body(), separators=(",", ":")).encode()
    reason = HTTPStatus(error.status).phrase
    lines = [
        f"HTTP/1.1 {error.status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name}: {value}" for name, value in [*error.headers().items(), *extra_headers]),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


async def _refuse(stream: IOStream, answer: bytes) -> None:
    try:
        await stream.write(answer)
    except StreamClosedError:
        return  # the client hung up
    # The body may still be coming: a plain close would reset the connection.
    close_gently(stream)
