"""Fixtures: a real Redis-compatible server, a fresh key namespace per test,
the hub in the test's event loop, real hub and worker processes, clients and
a browser. Helpers the tests import live in tests/support/."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis

from hub.runtime import processes
from hub.runtime.embedded import free_port
from hub.store.settings import Settings
from hub.web.app import build_context, connect_redis, make_app
from hub.web.auth import issue_token
from hub.web.context import HubContext
from hub.web.dispatch import JobDispatcher
from tests.support.environment import CHROMIUM, CHROMIUM_ARGS, need, need_redis_server
from tests.support.http import Api
from tests.support.processes import HubProcess, serve_env, spawn, wait_ready, worker_env
from tests.support.redis_cluster import LocalCluster, have_cluster_binaries
from tests.support.tokens import SECRET

# Property tests check behaviour, not speed: a loaded machine (or the first
# call's lazy imports) must not fail them on Hypothesis's per-example deadline.
hypothesis.settings.register_profile("hub", deadline=None)
hypothesis.settings.load_profile("hub")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    external = os.environ.get("HUB_TEST_REDIS_URL")
    if external:
        yield external
        return
    need_redis_server()
    from hub.runtime.embedded import EmbeddedRedis

    server = EmbeddedRedis(str(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: Any) -> str:
    return redis_server if isinstance(redis_server, str) else redis_server.url


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real Valkey Cluster (three primaries, a replica each) for one test
    module; its tests tell their keys apart by namespace."""
    need(have_cluster_binaries(), "no valkey-server and valkey-cli to run a cluster with")
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


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
        env = {**worker_env(settings), **env_overrides}
        command = [sys.executable, "-m", "hub", "worker"]
        for module in imports:
            command += ["--import", module]
        process = spawn(command, env, output)
        started.append(process)
        return process

    yield start
    for process in started:
        processes.stop_process(process, 20)


@pytest.fixture
def api(hub_url: str, token: Callable[..., str]) -> Callable[..., Api]:
    def make(user: str = "alice") -> Api:
        return Api(hub_url, token(user))

    return make


@pytest.fixture
def hub_process(settings: Settings) -> Iterator[Callable[..., HubProcess]]:
    """Starts real `hub serve` processes on the test's namespace."""
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


@pytest.fixture
def browser() -> Iterator[Any]:
    """A real headless Chromium, driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright package is not installed")
        return
    need(Path(CHROMIUM).is_file(), f"no chromium at {CHROMIUM} (set CHROMIUM_PATH)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
