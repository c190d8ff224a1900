"""A web app on a second loopback origin, for browser tests: its pages,
files and backend on a random port of its own, served from a thread.

Its origin is `http://localhost:PORT` while the hub is on 127.0.0.1: another
origin, and another site too, as an app in front of a hub would be. The port
is taken when the object is made, so the hub can be told the origin
(`HUB_CORS_ORIGINS`) before it starts.

What it serves is a list of routes: a route takes a request's path (without
its query) and answers, or returns None to leave it to the next route. An
unanswered path is a 404 with the contract's JSON body."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A module script is refused unless its type is JavaScript.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
}


@dataclass(frozen=True)
class Answer:
    body: bytes
    content_type: str = CONTENT_TYPES[".html"]
    status: int = 200

    @classmethod
    def html(cls, text: str) -> Answer:
        return cls(text.encode())

    @classmethod
    def script(cls, text: str) -> Answer:
        return cls(text.encode(), CONTENT_TYPES[".js"])

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Answer:
        return cls(json.dumps(value).encode(), CONTENT_TYPES[".json"], status)


Route = Callable[[str], Answer | None]


def page(path: str, answer: Callable[[], Answer]) -> Route:
    """`answer()` at exactly `path`, made at each request."""
    return lambda asked: answer() if asked == path else None


def files(prefix: str, root: Path, allowed: Iterable[str]) -> Route:
    """The files `allowed` (paths relative to `root`) at `prefix` + their
    path, and nothing else of `root`."""
    served = {relative: root / relative for relative in allowed}

    def route(asked: str) -> Answer | None:
        if not asked.startswith(prefix):
            return None
        path = served.get(asked[len(prefix) :])
        if path is None:
            return None
        return Answer(path.read_bytes(), CONTENT_TYPES.get(path.suffix, "application/octet-stream"))

    return route


NOT_FOUND = Answer.json({"error": "not_found", "message": "no such page on this app"}, status=404)


class AppOrigin:
    """The app's server; a context manager. `get` and `post` are its routes."""

    def __init__(self, get: Sequence[Route] = (), post: Sequence[Route] = ()) -> None:
        routes = {"GET": list(get), "POST": list(post)}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(routes["GET"])

            def do_POST(self) -> None:
                self._answer(routes["POST"])

            def _answer(self, candidates: list[Route]) -> None:
                path = self.path.split("?", 1)[0]
                answer = next((a for a in (route(path) for route in candidates) if a is not None), NOT_FOUND)
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.origin = f"http://localhost:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="app-origin", daemon=True)

    def __enter__(self) -> AppOrigin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
