"""The servers under test: an embedded Valkey and one server process (the hub,
the sse-starlette peer, or nginx with Nchan: bench/nchan.py), on loopback,
stopped on exit however the benchmark ends.

The server gets its own core (`system.cpu_sets`); Valkey, the publisher
and the load generator share the other one(s).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from bench.gcwatch import GC_LOG_ENV
from bench.gcwatch import pauses as gc_pauses
from bench.nchan import VARIANTS as NCHAN_VARIANTS
from bench.nchan import NchanServer
from bench.publisher import JournalSink, NchanSink, Sink
from bench.system import ProcessProbe, cpu_sets, pin
from hub.runtime.embedded import EmbeddedRedis, free_port
from hub.runtime.processes import answers_ok, die_with_parent, stop_process, wait_ready
from hub.store.journal import Journal
from hub.store.settings import Settings
from hub.web.auth import issue_token

ROOT = Path(__file__).resolve().parent.parent
SECRET = "benchmark-secret-that-is-long-enough-for-hs256"
NAMESPACE = "bench"
#: The job type of the benchmark's jobs: external, published by the benchmark.
JOB_TYPE = "bench"
#: Streams end when their token expires; no run comes near this.
TOKEN_TTL = 6 * 3600
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

#: Each Python server as `python -m MODULE ARGS`; Nchan's are nginx (NCHAN_VARIANTS).
SERVERS = {
    "hub": ["hub", "serve"],
    "peer": ["bench.peers.sse_starlette_peer"],
}
#: How long the clients' streams may take to show in Nchan's subscriber count.
SUBSCRIBE_TIMEOUT = 60.0
#: When set (by `--profile`), py-spy samples the server during each
#: measurement window and writes its samples into this folder, and the
#: server runs under bench.gcwatch, which logs its garbage collections.
PROFILE_DIR_ENV = "BENCH_PROFILE_DIR"
#: Set (by `--processes`) to run the hub as that many web-server processes.
PROCESSES_ENV = "HUB_PROCESSES"


class Stack:
    """`with Stack("hub", connections=N) as stack:` runs Valkey and the
    server until the block ends."""

    def __init__(self, server: str = "hub", *, connections: int, env: dict[str, str] | None = None) -> None:
        self.server = server
        self.connections = connections
        self.server_cpus, self.load_cpus = cpu_sets()
        self.processes = int(os.environ.get(PROCESSES_ENV) or 1) if server == "hub" else 1
        if self.processes > 1 and self.server_cpus is not None:
            # Several hub processes get every core, the load's included: on
            # a small machine they compete with it there.
            self.server_cpus = self.server_cpus | (self.load_cpus or set())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "HUB_PORT": str(self.port),
            "HUB_NAMESPACE": NAMESPACE,
            "HUB_JWT_SECRET": SECRET,
            "HUB_LOG_LEVEL": "WARNING",
            # The benchmark publishes its jobs' events itself, as an app's
            # own workers would for an external job type.
            "HUB_EXTERNAL_JOB_TYPES": JOB_TYPE,
            "HUB_EXAMPLE_JOBS": "0",
            # Room for every simulated client, and for all of one user's
            # connections in the broadcast scenario (one job has one owner).
            "HUB_MAX_CONNECTIONS": str(connections + 1_000),
            "HUB_MAX_CONNECTIONS_PER_USER": str(connections + 100),
            **(env or {}),
        }
        self._exit = ExitStack()
        self.process: subprocess.Popen[bytes] | None = None
        self.final_log = ""
        self.profiles: list[str] = []
        self.gc_log: str | None = None
        self.gc_windows: dict[str, dict[str, Any]] = {}
        self.valkey: EmbeddedRedis | None = None
        self.nchan: NchanServer | None = None
        self.nchan_setup: dict[str, Any] = {}

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def _start(self) -> None:
        data_dir = tempfile.mkdtemp(prefix="bench-")
        self._exit.callback(shutil.rmtree, data_dir, ignore_errors=True)
        self.valkey = EmbeddedRedis(os.path.join(data_dir, "valkey")).start()
        self._exit.callback(self.valkey.stop)
        assert self.valkey.process is not None
        pin(self.load_cpus, self.valkey.process.pid)
        self.valkey_probe = ProcessProbe(self.valkey.process.pid)
        self.redis_url = self.valkey.url
        self.env["HUB_REDIS_URL"] = self.redis_url
        self.redis = redis.Redis.from_url(self.redis_url)
        self._exit.callback(self.redis.close)
        self.settings = Settings(redis_url=self.redis_url, namespace=NAMESPACE, jwt_secret=SECRET)
        self.log_path = os.path.join(data_dir, f"{self.server}.log")
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        if self.server in NCHAN_VARIANTS:
            command = self._nchan_command(data_dir)
        else:
            command = [sys.executable, "-m", *SERVERS[self.server]]
        if os.environ.get(PROFILE_DIR_ENV) and self.nchan is None:
            self.gc_log = env[GC_LOG_ENV] = os.path.join(data_dir, "gc.log")
            command = [sys.executable, "-m", "bench.gcwatch", *SERVERS[self.server]]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._prepare_child,
            )
        self._exit.callback(self._stop_server)
        self._wait_ready()
        # Several hub processes: the parent's children do the work.
        self.probe = ProcessProbe(self._measured_pid(), children=self.processes > 1)

    def _nchan_command(self, data_dir: str) -> list[str]:
        folder = os.path.join(data_dir, "nginx")
        os.makedirs(folder)
        redis_url = self.redis_url if self.server == "nchan-redis" else None
        self.nchan = NchanServer(
            folder,
            self.port,
            connections=self.connections,
            keepalive_seconds=float(self.env.get("HUB_KEEPALIVE_SECONDS", "15")),
            redis_url=redis_url,
        )
        self.log_path = self.nchan.log_path
        return self.nchan.command()

    def _measured_pid(self) -> int:
        """The server's process; for nginx, its one worker, which holds every
        connection and does all of Nchan's work."""
        assert self.process is not None
        if self.nchan is None:
            return self.process.pid
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            worker = self.nchan.worker_pid(self.process.pid)
            if worker is not None:
                return worker
            time.sleep(0.05)
        raise RuntimeError(f"nginx started no worker:\n{self.log_tail()}")

    @property
    def sink(self) -> Sink:
        """Where the publisher sends the events, for this server."""
        if self.nchan is not None:
            return NchanSink(self.port)
        return JournalSink(self.redis_url, self.settings.namespace)

    def wait_subscribed(self, subscribers: int) -> None:
        """For Nchan, returns once it counts this many subscribers, none still
        waiting for Redis: a stream's `: hi` can come before its Redis
        SUBSCRIBE is confirmed, and a long-poll sends nothing until an event.
        The hub's streams are subscribed once they answered."""
        if self.nchan is None:
            return
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while not self.nchan.subscribed(subscribers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Nchan did not count {subscribers} subscribers: {self.nchan.status()}")
            time.sleep(0.1)

    @contextlib.contextmanager
    def profiled(self, label: str) -> Iterator[None]:
        """Samples the server with py-spy for the block, with `--profile`."""
        folder = os.environ.get(PROFILE_DIR_ENV)
        if not folder or self.process is None or self.nchan is not None:  # py-spy reads Python only
            yield
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = os.path.join(folder, f"{self.server}-{label}-n{self.connections}.txt")
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        # --nonblocking: sampling must not pause the server it measures; and
        # py-spy runs on the load cores, not the server's.
        command = [spy, "record", "--pid", str(self.process.pid), "--nonblocking", "--function"]
        with open(self.log_path, "ab") as log:
            sampler = subprocess.Popen(
                [*command, "--format", "raw", "--output", path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=self._prepare_sampler,
            )
        began = time.monotonic()
        try:
            yield
        finally:
            if self.gc_log:
                self.gc_windows[os.path.basename(path)] = gc_pauses(self.gc_log, began, time.monotonic())
            sampler.send_signal(signal.SIGINT)  # py-spy writes its samples on Ctrl-C
            try:
                sampler.wait(30)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait()
            self.profiles.append(path)

    def _prepare_sampler(self) -> None:
        die_with_parent()
        pin(self.load_cpus)

    def diagnostics(self) -> dict[str, Any]:
        """For the report, after the stack stopped: the server's settings, its
        last log lines (warnings) and the profiles taken, if any."""
        env = {name: value for name, value in self.env.items() if "SECRET" not in name}
        return {
            "server_env": env if self.nchan is None else self.nchan_setup,
            "server_log": self.final_log,
            "profiles": self.profiles,
            "gc_pauses": self.gc_windows,
        }

    def _prepare_child(self) -> None:
        die_with_parent()
        pin(self.server_cpus)

    def _wait_ready(self) -> None:
        assert self.process is not None
        if wait_ready(self._ready, watch=[self.process], timeout=READY_TIMEOUT):
            return
        if self.process.poll() is not None:
            raise RuntimeError(f"the {self.server} exited with {self.process.returncode}:\n{self.log_tail()}")
        raise RuntimeError(f"the {self.server} was not ready within {READY_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        if self.nchan is not None:
            if self.nchan.ready():
                self.nchan_setup = self.nchan.describe()
                return True
            return False
        return answers_ok(self.url + "/readyz")()

    def _stop_server(self) -> None:
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT)
        # Its log lives in a folder about to be removed: warnings go in the report.
        self.final_log = self.log_tail()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def valkey_version(self) -> str | None:
        info: dict[str, Any] = self.redis.info("server")
        return info.get("valkey_version") or info.get("redis_version")

    # -- the population: users, jobs, tokens ---------------------------------

    def token(self, user: str) -> str:
        return issue_token(self.settings, user, TOKEN_TTL)

    def create_jobs(self, owners: list[str], prefix: str) -> list[str]:
        """Creates one queued job per owner, as POST /api/v1/jobs would (no
        worker runs them: the benchmark publishes the jobs' events itself).
        Nchan has no jobs: a job's channel exists once subscribed to."""
        job_ids = [f"{prefix}{i:06d}" for i in range(len(owners))]
        if self.nchan is not None:
            return job_ids
        pipeline = self.redis.pipeline(transaction=False)
        journal = Journal(pipeline, self.settings)
        for start in range(0, len(owners), 1_000):
            for job_id, owner in zip(job_ids[start : start + 1_000], owners[start : start + 1_000], strict=True):
                journal.create(job_id, owner, JOB_TYPE)
            pipeline.execute()
        return job_ids
