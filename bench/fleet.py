"""Several hub processes on one machine, each on its own port, sharing one
Valkey: the Stack (bench/stack.py) with more servers. A process may hold
only as many connections as its open-file limit allows, so a crowd larger
than that needs several, and the clients are spread over their ports.
"""

from __future__ import annotations

import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.stack import READY_TIMEOUT, ROOT, STOP_TIMEOUT, Stack
from bench.system import ProcessProbe
from hub.runtime.embedded import free_port
from hub.runtime.processes import answers_ok, wait_ready
from hub.runtime.server import RESERVED_FILES

#: Files a hub process keeps free beyond its Redis reserve: its listening
#: socket, its logs, the warm-up connection.
SPARE_FILES = 500


def connections_per_process() -> int:
    """The most connections one hub process can hold under the open-file
    limit that the processes started from here get (the hard limit)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    return max(0, limit - RESERVED_FILES - SPARE_FILES)


def processes_needed(connections: int) -> int:
    per_process = connections_per_process()
    if per_process <= 0:
        raise RuntimeError("the open-file limit leaves no room for connections")
    return math.ceil(connections / per_process)


class Together(ProcessProbe):
    """The processes' CPU seconds and resident memory, summed; `pid` is the first's."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(pids[0])
        self.probes = [ProcessProbe(pid) for pid in pids]

    def cpu_seconds(self) -> float:
        return sum(probe.cpu_seconds() for probe in self.probes)

    def rss_bytes(self) -> int:
        return sum(probe.rss_bytes() for probe in self.probes)

    def rss_each_mib(self) -> list[float]:
        return [round(probe.rss_bytes() / 1024 / 1024, 1) for probe in self.probes]

    def cpu_each(self) -> list[float]:
        return [probe.cpu_seconds() for probe in self.probes]


class Fleet(Stack):
    """`with Fleet(processes=P, connections=N) as fleet:` runs Valkey and P
    hub processes (`fleet.ports`), each sized for its share of N. `probe`
    sums them, so what measures one server measures them all."""

    def __init__(self, *, processes: int, connections: int, env: dict[str, str] | None = None) -> None:
        # Each `hub serve` is one process, whatever HUB_PROCESSES says around it.
        env = {"HUB_PROCESSES": "1", **(env or {})}
        super().__init__("hub", connections=math.ceil(connections / processes), env=env)
        self.processes = processes
        self.others: list[subprocess.Popen[bytes]] = []
        self.ports = [self.port]
        self._logs: list[str] = []
        self.other_logs: list[str] = []

    def __enter__(self) -> Fleet:
        super().__enter__()
        return self

    def _start(self) -> None:
        super()._start()  # Valkey and the first hub process
        assert self.process is not None
        folder = os.path.dirname(self.log_path)
        self._exit.callback(self._stop_others)
        self._logs = logs = [os.path.join(folder, f"hub-{index}.log") for index in range(1, self.processes)]
        for log in logs:
            port = free_port()
            self.ports.append(port)
            self.others.append(self._spawn(port, log))
        for port, process, log in zip(self.ports[1:], self.others, logs, strict=True):
            ready = answers_ok(f"http://127.0.0.1:{port}/readyz")
            if not wait_ready(ready, watch=[process], timeout=READY_TIMEOUT):
                raise RuntimeError(f"the hub process on port {port} did not start:\n{_tail(log)}")
        self.hubs = self.probe = Together([p.pid for p in [self.process, *self.others]])

    def _spawn(self, port: int, log_path: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, "HUB_PORT": str(port), "PYTHONPATH": str(ROOT)}
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "hub", "serve"],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._prepare_child,
            )

    def _stop_others(self) -> None:
        """All at once: each drains its connections for up to its stop timeout."""
        for process in self.others:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.others:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Their logs live in a folder about to be removed: warnings go in the report.
        self.other_logs = [_tail(log, 10) for log in self._logs]

    def diagnostics(self) -> dict[str, Any]:
        return {
            **super().diagnostics(),
            "hub_processes": self.processes,
            "ports": self.ports,
            "other_server_logs": self.other_logs,
        }


def _tail(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
