"""`hub watch` (also `hub-watch`, or `python -m hub_client.watch`, with the
client alone): follow one job until it ends, from a terminal or a script.

On a terminal it redraws one progress line and prints a summary; otherwise it
prints one plain line per event (`active 40% traits`), flushed at once so a
pipe sees progress as it happens, and the result as JSON on the last line.
Text is printed as text (`“Zoë”`, not `\u201cZo\u00eb\u201d`); only what could
drive the terminal (control characters, bidirectional overrides) is escaped.
A file the job made (an image in its result) is printed as an absolute URL,
with how to fetch it: it needs the token.

When the hub cannot be reached, it says so on stderr at once and before each
retry (`hub unreachable at URL (...); retrying in N s (attempt k of M)`), and
gives up after MAX_RETRIES retries in a row: within GIVE_UP_WITHIN seconds of
waiting, plus each attempt's connect time (a hub that answers 429 or 503 is
waited for as long as its Retry-After says).

Exit codes: 0 the job completed, 1 it failed, 2 a usage error or the hub
refused (401, 404, 400), 3 the hub could not be followed (unreachable after
those retries, or an answer that breaks the API), 130 interrupted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import shutil
import sys
import time
import unicodedata
from collections.abc import Iterator
from typing import Any, Protocol, TextIO
from urllib.parse import urlsplit, urlunsplit

from hub_client.client import JOB_TYPE_NAME, TRANSPORTS, Event, HubClient
from hub_client.errors import BadRequest, HubClientError, NotFound, Unauthorized
from hub_client.follow import Retry

DEFAULT_URL = "http://127.0.0.1:8088"
EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
#: Retries in a row before giving up: a command should not hang on a wrong
#: URL or a dead hub, and should outlast a restart of the hub.
MAX_RETRIES = 6
#: The first wait, doubling with each failure up to MAX_DELAY (with jitter).
FIRST_DELAY = 1.0
MAX_DELAY = 5.0
#: The most the retries wait in all, whatever `retry:` the hub had asked for.
GIVE_UP_WITHIN = MAX_RETRIES * MAX_DELAY
BAR_WIDTH = 24
#: The paths of files a job made, as its result names them: the generic
#: `/api/v1/jobs/{id}/files/{name}` and a seed type's `/api/v1/{segment}/jobs/{id}/{name}`.
HUB_FILE = re.compile(
    r"\A/api/v1/(?:jobs/[^/?#]+/files|(?!sse/|poll/)[a-z][a-z0-9_-]{0,31}/jobs/[^/?#]+)/[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"
)
#: A result is searched this deep, and this many of its files are explained.
MAX_DEPTH = 6
MAX_FILE_NOTES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID", help="the job to follow")
    parser.add_argument("--type", required=True, type=job_type_name, metavar="TYPE", help="the job's type")
    parser.add_argument("--url", help=f"the hub's base URL (default: $HUB_URL or {DEFAULT_URL})")
    parser.add_argument(
        "--token",
        help="the JWT to send (default: $HUB_TOKEN, which is safer: a command line is visible to other users)",
    )
    parser.add_argument("--transport", choices=TRANSPORTS, default="sse", help="how to follow (default: sse)")


def job_type_name(value: str) -> str:
    if not JOB_TYPE_NAME.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a job type's name ([a-z][a-z0-9_-]{{0,31}})")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hub watch", description="Follow one job until it ends.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("HUB_TOKEN", "")
    if not token:
        return _fail(EXIT_USAGE, "no token: pass --token or set HUB_TOKEN")
    url = args.url or os.environ.get("HUB_URL") or DEFAULT_URL
    try:
        client = HubClient(url, token, max_retries=MAX_RETRIES, retry_delay=FIRST_DELAY, max_delay=MAX_DELAY)
    except ValueError as error:
        return _fail(EXIT_USAGE, str(error))
    for stream in (sys.stdout, sys.stderr):
        # A terminal whose encoding lacks a character gets an escape, not a crash.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    view: View
    if sys.stdout.isatty():
        view = TerminalView(sys.stdout, sys.stderr, client.base_url)
    else:
        view = PlainView(sys.stdout, sys.stderr, client.base_url)
    return follow(client, args.job_id, args.type, args.transport, view)


def follow(client: HubClient, job_id: str, job_type: str, transport: str, view: View) -> int:
    last: Event | None = None
    hub = shown_url(client.base_url)
    try:
        for event in client.watch(
            job_id, job_type, transport=transport, on_retry=lambda retry: view.notice(retry_notice(hub, retry))
        ):
            view.show(event)
            last = event
    except Unauthorized as error:
        view.abandon()
        return _fail(EXIT_USAGE, f"the hub refused the token ({_hub_message(error)})")
    except NotFound:
        view.abandon()
        return _fail(EXIT_USAGE, f"no {job_type} job {job_id!r} for this user (404)")
    except BadRequest as error:
        view.abandon()
        return _fail(EXIT_USAGE, f"bad request ({_hub_message(error)})")
    except HubClientError as error:
        view.abandon()
        return _fail(EXIT_UNREACHABLE, f"cannot follow the job: {error}")
    except KeyboardInterrupt:
        view.abandon()
        return EXIT_INTERRUPTED
    if last is None or last.get("status") not in ("completed", "failed"):
        # Only a 204 ends a watch early, and without a cursor there is none.
        return _fail(EXIT_UNREACHABLE, "the stream ended before the job did")
    view.finish(last)
    return EXIT_COMPLETED if last["status"] == "completed" else EXIT_FAILED


class View(Protocol):
    def show(self, event: Event) -> None: ...

    def notice(self, text: str) -> None: ...

    def finish(self, event: Event) -> None: ...

    def abandon(self) -> None: ...


class PlainView:
    """One line per event, for pipes and logs."""

    def __init__(self, out: TextIO, err: TextIO, base_url: str) -> None:
        self._out = out
        self._err = err
        self._base_url = base_url

    def show(self, event: Event) -> None:
        print(describe(event), file=self._out, flush=True)

    def notice(self, text: str) -> None:
        print(f"hub watch: {text}", file=self._err, flush=True)

    def finish(self, event: Event) -> None:
        if event.get("status") == "completed":
            result, files = hub_files(event.get("result"), self._base_url)
            # The last line is machine-readable: `hub watch ... | tail -n 1`.
            print(json_text(result), file=self._out, flush=True)
            for where, url in files:
                self.notice(file_note(where, url))
        else:
            print(f"hub watch: the job failed: {_reason(event)}", file=self._err, flush=True)

    def abandon(self) -> None:
        pass


class TerminalView:
    """A single progress line redrawn in place, then a summary."""

    def __init__(self, out: TextIO, err: TextIO, base_url: str) -> None:
        self._out = out
        self._err = err
        self._base_url = base_url
        self._drawn = 0
        self._started = time.monotonic()

    def show(self, event: Event) -> None:
        if event.get("type") == "reset":
            return  # the fresh state that follows redraws the line
        line = progress_line(event)
        # Wider than the terminal, the line would wrap and "\r" could not
        # return to its start.
        line = line[: max(10, shutil.get_terminal_size().columns - 1)]
        padding = " " * max(0, self._drawn - len(line))
        self._out.write(f"\r{line}{padding}")
        self._out.flush()
        self._drawn = len(line)

    def notice(self, text: str) -> None:
        # On a line of its own: the progress line goes on below it.
        self._end_line()
        print(f"hub watch: {text}", file=self._err, flush=True)

    def finish(self, event: Event) -> None:
        self._end_line()
        elapsed = time.monotonic() - self._started
        if event.get("status") == "completed":
            result, files = hub_files(event.get("result"), self._base_url)
            print(f"completed in {elapsed:.1f}s", file=self._out)
            print(json_text(result, indent=2), file=self._out, flush=True)
            for where, url in files:
                print(file_note(where, url), file=self._out, flush=True)
        else:
            print(f"failed after {elapsed:.1f}s: {_reason(event)}", file=self._out, flush=True)

    def abandon(self) -> None:
        self._end_line()

    def _end_line(self) -> None:
        if self._drawn:
            self._out.write("\n")
            self._out.flush()
            self._drawn = 0


def describe(event: Event) -> str:
    """`status progress% detail`, where the detail is the step or, for a
    retry or a failure, the reason."""
    status = event.get("status")
    if not isinstance(status, str):
        return _printable(str(event.get("type", "event")))
    parts = [status, f"{_progress(event)}%"]
    detail = event.get("failedReason") if status in ("retrying", "failed") else event.get("step")
    if detail:
        parts.append(str(detail))
    return _printable(" ".join(parts))


def progress_line(event: Event) -> str:
    progress = _progress(event)
    filled = BAR_WIDTH * progress // 100
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    status = str(event.get("status", event.get("type", "")))
    step = event.get("step") or ""
    return _printable(f"[{bar}] {progress:3d}% {status:<9} {step}".rstrip())


def retry_notice(hub: str, retry: Retry) -> str:
    """What the user reads before each wait: why, how long, and how many tries are left."""
    attempts = f" of {retry.attempts}" if retry.attempts is not None else ""
    when = f"in {retry.delay:.1f} s (attempt {retry.attempt}{attempts})"
    if retry.error is None:
        return f"the stream ended before the job did; reconnecting {when}"
    if retry.status is not None:
        return f"the hub at {hub} answered {retry.status}; retrying {when}"
    return f"hub unreachable at {hub} ({_why(retry.error)}); retrying {when}"


def _why(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return _printable(reason or type(error).__name__).replace("(", "[").replace(")", "]")


def shown_url(url: str) -> str:
    """`url` without a user or password it may carry."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def hub_files(result: Any, base_url: str) -> tuple[Any, list[tuple[str, str]]]:
    """The result with every hub file path in it made absolute, and where
    each was (`result.url`) with its absolute URL."""
    base = shown_url(base_url).rstrip("/")
    files: list[tuple[str, str]] = []

    def absolute(value: Any, where: str, depth: int) -> Any:
        if isinstance(value, str) and HUB_FILE.match(value):
            files.append((where, base + value))
            return base + value
        if depth >= MAX_DEPTH:
            return value
        if isinstance(value, dict):
            return {key: absolute(item, f"{where}.{key}", depth + 1) for key, item in value.items()}
        if isinstance(value, list):
            return [absolute(item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value)]
        return value

    return absolute(result, "result", 0), files[:MAX_FILE_NOTES]


def file_note(where: str, url: str) -> str:
    name = url.rsplit("/", 1)[-1]
    return (
        f"{_printable(where)} is a file on the hub; it needs the token: "
        f'curl -fH "Authorization: Bearer $HUB_TOKEN" -o {shlex.quote(name)} {shlex.quote(url)}'
    )


#: Format characters that join letters (in emoji and some scripts) and cannot move the cursor.
_JOINERS = frozenset("\u200c\u200d")


def json_text(value: Any, indent: int | None = None) -> str:
    """`value` as JSON with its text as text, except what could drive or
    garble a terminal (control and format characters, line separators,
    lone surrogates): those stay \\u escapes, so the JSON still reads back."""
    return "".join(_json_char(ch) for ch in json.dumps(value, ensure_ascii=False, indent=indent))


def _json_char(ch: str) -> str:
    if ch.isprintable() or ch == "\n" or ch in _JOINERS or unicodedata.category(ch) == "Zs":
        return ch  # the only newlines left are json's own, between items
    return "".join(f"\\u{unit:04x}" for unit in _utf16(ord(ch)))


def _utf16(code: int) -> Iterator[int]:
    if code < 0x10000:
        yield code
    else:
        code -= 0x10000
        yield 0xD800 + (code >> 10)
        yield 0xDC00 + (code & 0x3FF)


def _progress(event: Event) -> int:
    value: Any = event.get("progress", 0)
    try:
        return max(0, min(100, int(value)))
    except (TypeError, ValueError):
        return 0


def _printable(text: str) -> str:
    """Control characters from an event (an escape sequence in a step name)
    must not drive the user's terminal."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _reason(event: Event) -> str:
    return _printable(str(event.get("failedReason") or "no reason given"))


def _hub_message(error: HubClientError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    message = body.get("message") or body.get("error") or "no details"
    return f"{error.status}: {_printable(str(message))}"


def _fail(code: int, message: str) -> int:
    print(f"hub watch: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
