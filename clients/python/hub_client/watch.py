"""`hub watch` (also `hub-watch`, or `python -m hub_client.watch`, with the
client alone): follow one job until it ends, from a terminal or a script.

On a terminal it redraws one progress line and prints a summary; otherwise it
prints one plain line per event (`active 40% traits`), flushed at once so a
pipe sees progress as it happens, and the result as JSON on the last line.

Exit codes: 0 the job completed, 1 it failed, 2 a usage error or the hub
refused (401, 404, 400), 3 the hub could not be followed (unreachable after
several retries, or an answer that breaks the API), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Any, Protocol, TextIO

from hub_client.client import JOB_TYPE_NAME, TRANSPORTS, Event, HubClient
from hub_client.errors import BadRequest, HubClientError, NotFound, Unauthorized

DEFAULT_URL = "http://127.0.0.1:8088"
EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
#: Consecutive failed attempts before giving up (about 45 s of backoff in
#: all): a command should not hang forever on a wrong URL or a dead hub.
MAX_RETRIES = 6
BAR_WIDTH = 24


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
        client = HubClient(url, token, max_retries=MAX_RETRIES)
    except ValueError as error:
        return _fail(EXIT_USAGE, str(error))
    view: View = TerminalView(sys.stdout) if sys.stdout.isatty() else PlainView(sys.stdout, sys.stderr)
    return follow(client, args.job_id, args.type, args.transport, view)


def follow(client: HubClient, job_id: str, job_type: str, transport: str, view: View) -> int:
    last: Event | None = None
    try:
        for event in client.watch(job_id, job_type, transport=transport):
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

    def finish(self, event: Event) -> None: ...

    def abandon(self) -> None: ...


class PlainView:
    """One line per event, for pipes and logs."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._out = out
        self._err = err

    def show(self, event: Event) -> None:
        print(describe(event), file=self._out, flush=True)

    def finish(self, event: Event) -> None:
        if event.get("status") == "completed":
            # The last line is machine-readable: `hub watch ... | tail -n 1`.
            print(json.dumps(event.get("result")), file=self._out, flush=True)
        else:
            print(f"hub watch: the job failed: {_reason(event)}", file=self._err, flush=True)

    def abandon(self) -> None:
        pass


class TerminalView:
    """A single progress line redrawn in place, then a summary."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
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

    def finish(self, event: Event) -> None:
        self._end_line()
        elapsed = time.monotonic() - self._started
        if event.get("status") == "completed":
            print(f"completed in {elapsed:.1f}s", file=self._out)
            print(json.dumps(event.get("result"), indent=2), file=self._out, flush=True)
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
