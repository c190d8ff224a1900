"""Fixtures: a real Redis-compatible server, a fresh key namespace per test,
the hub in the test's event loop, real worker processes, and clients."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis

from hub.runtime import processes
from hub.store.settings import Settings
from hub.web.app import build_context, connect_redis, make_app
from hub.web.auth import issue_token
from hub.web.context import HubContext
from hub.web.dispatch import JobDispatcher
from tests import sse_client

# Property tests check behaviour, not speed: a loaded machine (or the first
# call's lazy imports) must not fail them on Hypothesis's per-example deadline.
hypothesis.settings.register_profile("hub", deadline=None)
hypothesis.settings.load_profile("hub")

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-that-is-long-enough-for-hs256"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """A missing server skips a test on a laptop but fails it in CI."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{reason} (required when CI=true)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    external = os.environ.get("HUB_TEST_REDIS_URL")
    if external:
        yield external
        return
    try:
        from hub.runtime.embedded import EmbeddedRedis, server_binary

        server_binary()
    except Exception as exc:  # ConfigError or ImportError
        need(False, f"no Redis-compatible server: {exc}")
        return
    server = EmbeddedRedis(str(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: Any) -> str:
    return redis_server if isinstance(redis_server, str) else redis_server.url


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def settings_for(redis_url: str, namespace: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "namespace": namespace,
            "jwt_secret": SECRET,
            "job_step_seconds": 0.02,
            "keepalive_seconds": 15.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(request: pytest.FixtureRequest, settings_for: Callable[..., Settings]) -> Settings:
    """The hub's settings; a test changes some with @pytest.mark.hub_settings(...)."""
    marker = request.node.get_closest_marker("hub_settings")
    return settings_for(**(marker.kwargs if marker else {}))


@pytest.fixture
def sync_redis(redis_url: str, namespace: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def ctx(io_loop: Any, settings: Settings, sync_redis: redis.Redis) -> Iterator[HubContext]:
    async def start() -> HubContext:
        client = connect_redis(settings.redis_url or "")
        context = build_context(settings, client, JobDispatcher(settings))
        await context.start()
        await context.bus.wait_connected(10)
        return context

    context: HubContext = io_loop.run_sync(start)
    yield context

    async def stop() -> None:
        await context.close()
        await context.redis.aclose()

    io_loop.run_sync(stop)


@pytest.fixture
def app(ctx: HubContext) -> Any:
    return make_app(ctx)


@pytest.fixture
def hub_url(http_server: Any, http_port: int) -> str:
    return f"http://127.0.0.1:{http_port}"


@pytest.fixture
def token(settings: Settings) -> Callable[..., str]:
    def make(user: str = "alice", ttl: int = 600) -> str:
        return issue_token(settings, user, ttl)

    return make


@pytest.fixture
def worker(settings: Settings) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts real `hub worker` processes on the test's namespace."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*imports: str, output: Path | None = None, **env_overrides: str) -> subprocess.Popen[bytes]:
        """`output` names a file that gets the process's stdout and stderr."""
        env = dict(os.environ)
        env.update(
            HUB_REDIS_URL=settings.redis_url or "",
            HUB_NAMESPACE=settings.namespace,
            HUB_JWT_SECRET=SECRET,
            HUB_JOB_STEP_SECONDS=str(settings.job_step_seconds),
            HUB_LOG_LEVEL="WARNING",
            HUB_WORKER_METRICS_PORT="0",
            PYTHONPATH=str(ROOT),
        )
        env.update(job_type_env(settings))
        env.update(env_overrides)
        command = [sys.executable, "-m", "hub", "worker"]
        for module in imports:
            command += ["--import", module]
        process = spawn(command, env, output)
        started.append(process)
        return process

    yield start
    for process in started:
        processes.stop_process(process, 20)


def spawn(command: list[str], env: dict[str, str], output: Path | None = None) -> subprocess.Popen[bytes]:
    """Starts a hub process; `output` names a file for its stdout and stderr."""
    if output is None:
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    with open(output, "ab") as sink:
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)


def serve_env(settings: Settings, port: int) -> dict[str, str]:
    """The environment of a `hub serve` on `port`, with the test's settings."""
    return {
        **os.environ,
        "HUB_PORT": str(port),
        "HUB_REDIS_URL": settings.redis_url or "",
        "HUB_NAMESPACE": settings.namespace,
        "HUB_JWT_SECRET": SECRET,
        "HUB_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **job_type_env(settings),
    }


def job_type_env(settings: Settings) -> dict[str, str]:
    """The test's job-type settings, for hub processes it starts."""
    return {
        "HUB_APPS": ",".join(settings.apps),
        "HUB_EXTERNAL_JOB_TYPES": ",".join(settings.external_job_types),
        "HUB_EXAMPLE_JOBS": "1" if settings.example_jobs else "0",
    }


class Api:
    """Calls the hub as a user would."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token

    def auth(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        import json

        response = await sse_client.request(
            self.base_url + path,
            method="POST",
            headers=self.auth({"Content-Type": "application/json"}),
            body=json.dumps(body).encode(),
        )
        return response.status, await response.json_body()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> sse_client.Response:
        return await sse_client.request(self.base_url + path, headers=self.auth(headers))

    async def create_character(self, name: str = "Ada", description: str = "curious and brave") -> str:
        status, body = await self.post("/api/v1/characters", {"name": name, "description": description})
        assert status == 202, body
        return str(body["jobId"])

    async def create_image(self, prompt: str = "a fox at dawn", width: int = 96, height: int = 64) -> str:
        status, body = await self.post("/api/v1/media/images", {"prompt": prompt, "width": width, "height": height})
        assert status == 202, body
        return str(body["jobId"])

    async def send(self, path: str, headers: dict[str, str] | None = None) -> sse_client.Sent:
        """Sends a GET without waiting for its answer (a held long-poll)."""
        return await sse_client.send(self.base_url + path, headers=self.auth(headers))

    async def stream(self, path: str, last_event_id: str | None = None) -> sse_client.Response:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        return await self.get(path, headers)


@pytest.fixture
def api(hub_url: str, token: Callable[..., str]) -> Callable[..., Api]:
    def make(user: str = "alice") -> Api:
        return Api(hub_url, token(user))

    return make


def enqueue_job(
    settings: Settings, actor: str, job_id: str, owner: str, options: dict[str, Any] | None = None, **message: Any
) -> None:
    """Sends a hub job straight to the broker, as the hub does, for any actor
    (the test actors in tests/flaky_actors.py included)."""
    import dramatiq

    from actors.broker import make_broker
    from hub.store.registry import JOB_OPTION, QUEUE

    broker = make_broker(settings)
    job = {JOB_OPTION: {"id": job_id, "owner": owner, "type": "character"}}
    try:
        broker.enqueue(
            dramatiq.Message(
                queue_name=QUEUE, actor_name=actor, args=(), kwargs={}, options={**job, **(options or {})}, **message
            )
        )
    finally:
        broker.close()


async def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Polls `check` until it returns something truthy: a bounded wait on a
    condition, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


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
        import urllib.request

        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as answer:
            return str(answer.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def stop(self, timeout: float = 30) -> int:
        return processes.stop_process(self.process, timeout)


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if processes.wait_ready(processes.answers_ok(url), watch=[process], timeout=timeout):
        return
    if process.poll() is not None:
        raise AssertionError(f"the process exited with {process.returncode}")
    raise AssertionError(f"{url} did not answer within {timeout}s")


@pytest.fixture
def hub_process(settings: Settings) -> Iterator[Callable[..., HubProcess]]:
    """Starts real `hub serve` processes on the test's namespace."""
    from hub.runtime.embedded import free_port

    started: list[HubProcess] = []

    def start(*, dev_tokens: bool = False, output: Path | None = None, **env_overrides: str) -> HubProcess:
        """`dev_tokens` runs it as `hub up` does, with the demo's token endpoint;
        `output` names a file that gets the process's stdout and stderr."""
        port = free_port()
        env = {**serve_env(settings, port), **env_overrides}
        command = [sys.executable, "-m", "hub", "serve", *(["--dev-tokens"] if dev_tokens else [])]
        process = spawn(command, env, output)
        hub = HubProcess(process, port, output, host=env.get("HUB_HOST", "127.0.0.1"))
        started.append(hub)
        wait_ready(hub.url + "/readyz", process)
        return hub

    yield start
    for hub in started:
        hub.stop()
