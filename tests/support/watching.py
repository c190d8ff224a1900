"""Driving the Python client and `hub watch` from a test: a watch consumed
in the background, a command's output line by line, and the command's
environment."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from tests.support.environment import ROOT


class Consumer(threading.Thread):
    """Runs a watch in the background, so the test can act on the hub and
    the network while the client is connected."""

    DONE = object()

    def __init__(self, events: Iterator[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self._events = events
        self._queue: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            for event in self._events:
                self._queue.put(event)
        except BaseException as error:
            self.error = error
        finally:
            self._queue.put(self.DONE)

    def next(self, timeout: float = 15.0) -> dict[str, Any]:
        item = self._queue.get(timeout=timeout)
        if item is self.DONE:
            raise AssertionError(f"the watch ended early: {self.error!r}")
        return dict(item)

    def rest(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        items = []
        while (item := self._queue.get(timeout=timeout)) is not self.DONE:
            items.append(item)
        self.join(timeout)
        if self.error is not None:
            raise self.error
        return items


class Lines(threading.Thread):
    """A subprocess's output, line by line, with a timeout on each."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.start()

    def run(self) -> None:
        for line in self._stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next(self, timeout: float = 15.0) -> str | None:
        return self._queue.get(timeout=timeout)

    def rest(self, timeout: float = 30.0) -> list[str]:
        lines = []
        while (line := self.next(timeout)) is not None:
            lines.append(line)
        return lines


def command_env(token: str | None) -> dict[str, str]:
    # The client beside this checkout, not one installed from elsewhere.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")]))
    env.pop("HUB_URL", None)
    env.pop("HUB_TOKEN", None)
    if token is not None:
        env["HUB_TOKEN"] = token
    return env


def run_watch(*args: str, token: str | None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "watch", *args],
        env=command_env(token),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start_watch(*args: str, token: str, **popen: Any) -> subprocess.Popen[Any]:
    """`hub watch` running in the background; its output read as it comes."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen(
        [sys.executable, "-m", "hub", "watch", *args], env=command_env(token), stdin=subprocess.DEVNULL, **options
    )
