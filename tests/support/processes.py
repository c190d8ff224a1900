"""Real hub processes started by the tests: their environment, their start
and their readiness."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hub.runtime import processes
from hub.runtime.processes import stop_process
from hub.store.settings import Settings
from tests.support.environment import ROOT
from tests.support.tokens import SECRET


def spawn(command: list[str], env: dict[str, str], output: Path | None = None) -> subprocess.Popen[bytes]:
    """Starts a hub process; `output` names a file for its stdout and stderr."""
    if output is None:
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    with open(output, "ab") as sink:
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)


def job_type_env(settings: Settings) -> dict[str, str]:
    """The test's job-type settings, for hub processes it starts."""
    return {
        "HUB_APPS": ",".join(settings.apps),
        "HUB_EXTERNAL_JOB_TYPES": ",".join(settings.external_job_types),
        "HUB_EXAMPLE_JOBS": "1" if settings.example_jobs else "0",
    }


def store_env(settings: Settings) -> dict[str, str]:
    """Where the test's Redis and broker are, for processes it starts."""
    broker = {"HUB_BROKER_URL": settings.broker_url} if settings.broker_url else {}
    return {"HUB_REDIS_URL": settings.redis_url or "", **broker}


def serve_env(settings: Settings, port: int) -> dict[str, str]:
    """The environment of a `hub serve` on `port`, with the test's settings."""
    return {
        **os.environ,
        "HUB_PORT": str(port),
        **store_env(settings),
        "HUB_NAMESPACE": settings.namespace,
        "HUB_JWT_SECRET": SECRET,
        "HUB_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **job_type_env(settings),
    }


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a `hub worker` with the test's settings."""
    return {
        **os.environ,
        **store_env(settings),
        "HUB_NAMESPACE": settings.namespace,
        "HUB_JWT_SECRET": SECRET,
        "HUB_JOB_STEP_SECONDS": str(settings.job_step_seconds),
        "HUB_LOG_LEVEL": "WARNING",
        "HUB_WORKER_METRICS_PORT": "0",
        "PYTHONPATH": str(ROOT),
        **job_type_env(settings),
    }


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Waits until `url` answers 200; fails at once if `process` exits."""
    if processes.wait_ready(processes.answers_ok(url), watch=[process], timeout=timeout):
        return
    if process.poll() is not None:
        raise AssertionError(f"the process exited with {process.returncode}")
    raise AssertionError(f"{url} did not answer within {timeout}s")


class HubProcess:
    """A real `hub serve` process on a free port."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, output: Path | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.process = process
        self.port = port
        self.url = f"http://{host}:{port}"
        #: The file the process's stdout and stderr go to, when asked for.
        self.output = output

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as answer:
            return str(answer.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels`, as
        the process's /metrics shows them."""
        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def stop(self, timeout: float = 30) -> int:
        return stop_process(self.process, timeout)
