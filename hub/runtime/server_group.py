"""`hub serve` on several cores: HUB_PROCESSES web-server processes on one
port, and this process watching over them.

Each child is a whole `hub serve` of its own (event loop, Redis pool,
pub/sub connection, per-process connection cap), started as `python -m hub
serve --shared-port`. This process restarts a child that dies (after a
pause that doubles while it keeps dying, and gives up on a crash loop),
and on SIGTERM or SIGINT has every child drain, then exits after them.

Each child binds the port itself with SO_REUSEPORT, rather than all of
them inheriting one socket bound here. The kernel then gives each child a
queue of its own and hashes every new connection to one of them: connections
spread evenly, and a connection wakes only the process that gets it. With
one shared socket every process waits on the same queue, all of them wake
for each connection and race to accept it, and the spread follows whichever
event loop happens to look first. The price: the connections still queued
(not yet accepted) by a child that dies are reset, and their clients
reconnect, as they do after any drop.

The children write their metrics to a folder this process creates and
removes (hub/web/metrics.py), so a scrape of any of them shows the server.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import dramatiq
from dramatiq.brokers.stub import StubBroker
from prometheus_client.multiprocess import mark_process_dead

from hub.runtime.ports import check_free
from hub.runtime.processes import die_with_parent
from hub.store import registry
from hub.store.settings import Settings
from hub.web.metrics import MULTIPROCESS_DIR_ENV

log = logging.getLogger("hub.runtime.server_group")

#: A child that exits is started again after this pause, doubled for each
#: of its exits within the last minute, up to the maximum.
RESTART_DELAY_SECONDS = 0.5
MAX_RESTART_DELAY_SECONDS = 10.0
#: A child that exits more often than this within a minute is in a crash
#: loop (a bug, a broken app module): the server stops, with exit code 1, so
#: that its service manager sees it, rather than restarting it forever.
MAX_EXITS_PER_MINUTE = 5
#: How long a child may take to drain after SIGTERM before it is killed:
#: it waits up to 10 s (server.DRAIN_SECONDS) for its clients to leave, then
#: closes the rest. (Not imported from there: this process, which serves
#: nothing, does without the web server's modules and their memory.)
STOP_TIMEOUT = 15.0
#: How often this process looks at its children.
WATCH_SECONDS = 0.1
#: A child's exit code for a bad setting or an address it cannot listen on:
#: starting it again would fail the same way.
CONFIG_ERROR_EXIT = 2


def cores() -> int:
    """The cores this process may run on (its affinity, as `taskset` or a
    container's cpuset leave it), not merely those the machine has."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def process_count(configured: int | None, *, default: int) -> int:
    """HUB_PROCESSES (`default` when unset); 0 means one per core."""
    count = default if configured is None else configured
    return count or cores()


@dataclass
class Member:
    """One place in the group, held by successive processes."""

    slot: int
    process: subprocess.Popen[bytes] | None = None
    #: When its processes exited on their own, within the last minute.
    exits: collections.deque[float] = field(default_factory=collections.deque)
    restart_at: float | None = None


class ServerGroup:
    """`count` processes running `command`, each restarted when it exits."""

    def __init__(
        self,
        count: int,
        command: list[str],
        env: dict[str, str],
        metrics_dir: str,
        *,
        restart_delay: float = RESTART_DELAY_SECONDS,
    ) -> None:
        self.members = [Member(slot) for slot in range(count)]
        self.command = command
        self.env = env
        self.metrics_dir = metrics_dir
        self.restart_delay = restart_delay

    def run(self, stop: threading.Event) -> int:
        """Keeps every member running until `stop` is set (0), or until one
        cannot be kept running (2: a bad setting, 1: a crash loop); then
        stops them all."""
        try:
            for member in self.members:
                self._start(member)
            while not stop.wait(WATCH_SECONDS):
                for member in self.members:
                    outcome = self._watch(member)
                    if outcome is not None:
                        return outcome
            return 0
        finally:
            self.stop()

    def stop(self) -> None:
        """Has every child drain at once; kills those not done in time."""
        running = [m.process for m in self.members if m.process is not None and m.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("web-server process %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
        for member in self.members:
            if member.process is not None:
                self._forget_gauges(member.process.pid)

    def _forget_gauges(self, pid: int) -> None:
        """A process that exited takes its gauges (its open connections) out
        of the server's sums; its counters stay in them."""
        mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    def _start(self, member: Member) -> None:
        member.restart_at = None
        member.process = subprocess.Popen(
            self.command, env=self.env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        log.debug("web-server process %d started (pid %d)", member.slot, member.process.pid)

    def _watch(self, member: Member) -> int | None:
        now = time.monotonic()
        if member.restart_at is not None:
            if now >= member.restart_at:
                self._start(member)
            return None
        assert member.process is not None
        code = member.process.poll()
        if code is None:
            return None
        self._forget_gauges(member.process.pid)
        if code == CONFIG_ERROR_EXIT:
            log.error("web-server process %d could not start (see above); stopping", member.slot)
            return CONFIG_ERROR_EXIT
        while member.exits and member.exits[0] < now - 60:
            member.exits.popleft()
        member.exits.append(now)
        if len(member.exits) > MAX_EXITS_PER_MINUTE:
            log.error("web-server process %d exited %d times within a minute; stopping", member.slot, len(member.exits))
            return 1
        delay = min(self.restart_delay * 2 ** (len(member.exits) - 1), MAX_RESTART_DELAY_SECONDS)
        log.log(
            logging.WARNING if code else logging.INFO,
            "web-server process %d (pid %d) %s; restarting it in %.1f s",
            member.slot,
            member.process.pid,
            describe_exit(code),
            delay,
        )
        member.restart_at = now + delay
        return None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def serve_group(settings: Settings, count: int, *, dev_tokens: bool = False) -> int:
    """Runs `count` web-server processes on the settings' port until SIGTERM
    or SIGINT; returns the exit code."""
    # What would stop every child stops here, once: a bad app, a taken port.
    dramatiq.set_broker(StubBroker())  # an app's plain actors stay off Redis here
    registry.load(settings.app_modules, settings.external_job_types)
    # The children bind with SO_REUSEPORT, which another server holding the
    # port with SO_REUSEPORT too (as this user) would not refuse; this probe
    # binds without it.
    check_free(settings.host, settings.port)

    metrics_dir = tempfile.mkdtemp(prefix="hub-metrics-")
    env = {**os.environ, "HUB_PROCESSES": "1", MULTIPROCESS_DIR_ENV: metrics_dir}
    command = [sys.executable, "-m", "hub", "serve", "--shared-port", *(["--dev-tokens"] if dev_tokens else [])]
    group = ServerGroup(count, command, env, metrics_dir)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    log.info("starting %d web-server processes on %s:%d", count, settings.host, settings.port)
    try:
        return group.run(stop)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
