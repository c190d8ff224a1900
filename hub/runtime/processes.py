"""Child-process helpers shared by `hub up`, the embedded Redis, the
benchmark and the tests: start, wait until ready, stop."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Run in a child before exec: the kernel sends it SIGTERM when the
    parent dies, however it dies, so no child is left orphaned."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Asks `process` to stop (SIGTERM), kills it if it has not within
    `timeout` seconds, and returns its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def wait_ready(
    ready: Callable[[], bool],
    *,
    watch: Iterable[subprocess.Popen[bytes]] = (),
    timeout: float,
    interval: float = 0.05,
    stop: threading.Event | None = None,
) -> bool:
    """Asks `ready` every `interval` seconds until it says yes (True), or
    until a process of `watch` exits, `stop` is set or `timeout` passes
    (False: the caller tells which from the processes and `stop`)."""
    watched = list(watch)
    stop = stop or threading.Event()
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        if any(process.poll() is not None for process in watched):
            return False
        if ready():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        stop.wait(min(interval, left))
    return False


def answers_ok(url: str) -> Callable[[], bool]:
    """A `ready` check for `wait_ready`: `url` answers 200."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:  # refused, reset, timed out, or an HTTP error status
            return False

    return check
