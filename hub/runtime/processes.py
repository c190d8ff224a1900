"""Child-process helpers shared by `hub up` and the tests."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess

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
