"""Kernel settings a large run needs: raised for the run when this process
may change them (as root), and put back as they were when it ends; what
each was and became goes in the report."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROC_SYS = Path("/proc/sys")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _path(name: str) -> Path:
    return PROC_SYS / name.replace(".", "/")


def read(name: str) -> int | None:
    try:
        return int(_path(name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def at_least(minimums: dict[str, int]) -> Iterator[dict[str, Any]]:
    """Raises each sysctl below its minimum for the block; yields, per
    name, its value during the run (and what it was, when raised, or why
    it could not be)."""
    report: dict[str, Any] = {}
    restore: list[tuple[str, int]] = []
    for name, minimum in minimums.items():
        current = read(name)
        if current is None or current >= minimum:
            report[name] = {"value": current}
            continue
        try:
            _path(name).write_text(str(minimum))
        except OSError as exc:
            report[name] = {"value": current, "wanted": minimum, "error": exc.strerror or str(exc)}
            continue
        restore.append((name, current))
        report[name] = {"value": minimum, "was": current}
    try:
        yield report
    finally:
        for name, value in restore:
            with contextlib.suppress(OSError):
                _path(name).write_text(str(value))


def tcp_memory_mib() -> float | None:
    """Memory the kernel holds for TCP buffers, machine-wide (sockstat's `mem`, in pages)."""
    try:
        lines = Path("/proc/net/sockstat").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("TCP:"):
            fields = line.split()[1:]
            values = dict(zip(fields[::2], fields[1::2], strict=False))
            if "mem" in values:
                return round(int(values["mem"]) * PAGE_BYTES / 1024 / 1024, 1)
    return None


def meminfo_mib(name: str) -> float:
    """One line of /proc/meminfo: `MemAvailable` (what processes may still
    use), `Slab` (the kernel's own objects: sockets, files, epoll entries)..."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(name + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0
