"""`hub up` as a newcomer runs it: everything starts, the printed token
works, a job is followed to the end, Ctrl-C in a terminal stops the web
server, then the worker, then Redis, and leaves no process behind; a busy
port, a public key or a Redis password get a clear answer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hub.runtime.embedded import EmbeddedRedis, free_port
from hub.runtime.supervisor import _print_banner
from hub.store.keys import KeySpace
from hub.store.registry import Registry
from hub.store.settings import Settings
from tests.support.environment import ROOT, need_redis_server
from tests.support.process_tree import alive
from tests.support.tokens import SECRET

STARTUP_TIMEOUT = 60.0
BANNER_END = "Press Ctrl-C to stop."


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.add(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    result: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = set().union(*(children_of(p) for p in frontier)) - result
        result |= frontier
    return result


def wait_until(check: Callable[[], Any], timeout: float, what: Callable[[], str] = str) -> Any:
    """Polls `check` until it returns something truthy (a bounded wait on a
    condition, never a fixed sleep); `what` explains a timeout."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, what()
        time.sleep(0.05)
    return result


@dataclass
class HubUp:
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def banner(self) -> str:
        """Waits until `hub up` says it is running; its output so far."""

        def printed() -> str | None:
            assert self.process.poll() is None, self.output()
            text = self.output()
            return text if BANNER_END in text else None

        return str(wait_until(printed, STARTUP_TIMEOUT, self.output))

    def token(self) -> str:
        found = re.search(r"export HUB_TOKEN=(\S+)", self.banner())
        assert found, self.output()
        return found.group(1)


@pytest.fixture
def hub_up(tmp_path: Path) -> Iterator[Callable[..., HubUp]]:
    """Starts `hub up` in its own session, as a terminal runs a foreground
    command: a signal to its process group reaches whatever is in that group."""
    need_redis_server()
    started: list[HubUp] = []

    def start(*args: str, **env_overrides: str) -> HubUp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env.update(
            HUB_PORT=str(port),
            HUB_JOB_STEP_SECONDS="0.05",
            HUB_WORKER_METRICS_PORT="0",  # several `hub up` may run at once
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(ROOT),
        )
        env.update(env_overrides)
        log_path = tmp_path / f"hub-up-{len(started)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "hub", "up", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        hub = HubUp(process, log_path, int(env["HUB_PORT"]))
        started.append(hub)
        return hub

    yield start
    for hub in started:
        if hub.process.poll() is None:
            os.killpg(hub.process.pid, signal.SIGKILL)
            hub.process.wait()


def call(url: str, token: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_hub_up_runs_everything_and_stops_cleanly(hub_up, stop_signal):
    hub = hub_up(HUB_EMBEDDED_MAXMEMORY="64mb")
    token = hub.token()
    assert f"{hub.url}/" in hub.output()
    family = descendants(hub.process.pid)
    assert len(family) >= 3, "Redis, web server and worker run as children"
    found = re.search(r"Redis:\s+(redis://\S+)", hub.output())
    assert found, hub.output()
    embedded = redis.Redis.from_url(found.group(1))
    # Bounded, and full means refused, never history silently evicted.
    assert embedded.config_get("maxmemory") == {"maxmemory": str(64 * 1024 * 1024)}
    assert embedded.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    embedded.close()

    # The banner's own "Try it" command starts a job, as printed.
    start = hub.banner().split("Try it:", 1)[1].split("Press Ctrl-C", 1)[0].strip().splitlines()
    curl = "\n".join(start[2:]).strip()
    assert "/api/v1/jobs" in curl, hub.banner()
    printed = subprocess.run(
        ["bash", "-c", curl], env=dict(os.environ, HUB_TOKEN=token), capture_output=True, text=True
    )
    assert json.loads(printed.stdout)["status"] == "queued", printed

    status, job = call(hub.url + "/api/v1/characters", token, {"name": "Newcomer"})
    assert status == 202, job
    stream = urllib.request.Request(hub.url + job["links"]["sse"], headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(stream, timeout=30) as answer:
        text = answer.read().decode()  # the stream ends after the terminal event
    statuses = [json.loads(line[6:])["status"] for line in text.splitlines() if '"status"' in line]
    assert statuses[-1] == "completed" and "active" in statuses

    hub.process.send_signal(stop_signal)
    assert hub.process.wait(30) == 0
    assert not [pid for pid in family if alive(pid)], "no orphan is left behind"


def hub_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_WORKER_METRICS_PORT="0", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    env.update(overrides)
    return env


def test_ctrl_c_in_a_terminal_stops_web_then_worker_then_redis_and_the_running_job_finishes(hub_up, tmp_path):
    """Ctrl-C sends SIGINT to the terminal's whole foreground process group.
    Redis must not be in it: the web server stops first, then the worker
    finishes its job, and only then is Redis stopped."""
    data = tmp_path / "data"
    hub = hub_up("--data-dir", str(data), HUB_JOB_STEP_SECONDS="0.4", HUB_JWT_SECRET=SECRET)
    token = hub.token()
    status, job = call(hub.url + "/api/v1/characters", token, {"name": "Interrupted"})
    assert status == 202, job
    job_url = hub.url + job["links"]["status"]
    wait_until(lambda: call(job_url, token)[1]["data"]["status"] == "active", 30)

    interrupted = time.time()
    os.killpg(hub.process.pid, signal.SIGINT)  # what Ctrl-C does
    assert hub.process.wait(60) == 0, hub.output()
    exited = time.time()

    output = hub.output()
    trouble = [ln for ln in output.splitlines() if re.search(r" (CRITICAL|ERROR) |Traceback|ConnectionError", ln)]
    assert not trouble, output
    lines = output.splitlines()
    web_stopped = next(i for i, ln in enumerate(lines) if "hub.runtime.server" in ln and ln.endswith(": stopped"))
    worker_stopping = next(i for i, ln in enumerate(lines) if "actors.worker" in ln and "worker stopping" in ln)
    assert web_stopped < worker_stopping, "the web server stops before the worker is asked to"
    redis_log = (data / "redis" / "valkey.log").read_text()
    assert "Received SIGINT" not in redis_log, "Redis got the terminal's Ctrl-C itself"
    assert "Received SIGTERM" in redis_log, "hub up stops Redis itself, last"

    # The store as Redis left it on disk: the job was not orphaned mid-way.
    server = EmbeddedRedis(str(data / "redis")).start()
    try:
        client = redis.Redis(port=server.port)
        state = json.loads(client.hget(KeySpace("hub").job(job["jobId"]), "state") or b"{}")
        client.close()
    finally:
        server.stop()
    assert state.get("status") == "completed", state
    finished = datetime.fromisoformat(state["completedAt"].replace("Z", "+00:00")).timestamp()
    print(
        f"\njob completed {finished - interrupted:.2f} s after Ctrl-C; hub up exited {exited - interrupted:.2f} s"
        f" after it; error lines: {len(trouble)}"
    )


def test_hub_up_on_a_busy_port_fails_at_once_naming_HUB_PORT(hub_process, tmp_path):
    need_redis_server()
    other = hub_process()  # another hub already answers on the port
    data = tmp_path / "data"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "hub", "up", "--data-dir", str(data)],
        env=hub_env(HUB_PORT=str(other.port)),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    output = (result.stdout + result.stderr).decode(errors="replace")
    print(f"\nhub up on a busy port: exit {result.returncode} after {elapsed:.2f} s")
    assert result.returncode == 2, output
    assert (
        result.stderr.decode().strip()
        == f"hub: port {other.port} on 127.0.0.1 is in use (set HUB_PORT to another port)"
    )
    assert result.stdout == b"", "no banner, no token"
    assert not (data / "redis").exists(), "nothing was started"


SECRET_PASSWORD = "s3cret-redis-pw"


def test_hub_up_never_prints_the_redis_password(hub_up, tmp_path, namespace):
    server = EmbeddedRedis(str(tmp_path / "redis")).start()
    try:
        admin = redis.Redis(port=server.port)
        admin.config_set("requirepass", SECRET_PASSWORD)
        admin.close()
        url = f"redis://default:{SECRET_PASSWORD}@127.0.0.1:{server.port}/0"
        hub = hub_up(HUB_REDIS_URL=url, HUB_NAMESPACE=namespace)
        # The password works: a job is accepted, so the hub reached Redis with it.
        status, body = call(hub.url + "/api/v1/characters", hub.token(), {"name": "Locked"})
        assert status == 202, body
        hub.process.send_signal(signal.SIGTERM)
        assert hub.process.wait(30) == 0
    finally:
        server.stop()
    output = hub.output()
    print(f"\npassword printed {output.count(SECRET_PASSWORD)} times")
    assert SECRET_PASSWORD not in output
    assert f"redis://default:***@127.0.0.1:{server.port}/0" in output


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://user:s3cret@redis.internal:6379/0", "redis://user:***@redis.internal:6379/0"),
        ("redis://:s3cret@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
        ("rediss://default:s3cret%2Fpw@redis.internal:6380/1", "rediss://default:***@redis.internal:6380/1"),
        ("unix://user:s3cret@/run/redis.sock?db=0", "unix://user:***@/run/redis.sock?db=0"),
        ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
        ("redis://user:s3cret/not@encoded@redis.internal:6379/0", "redis://user:***@redis.internal:6379/0"),
        ("redis://redis.internal:6379/0", "redis://redis.internal:6379/0"),
    ],
)
def test_the_banner_hides_the_password_of_any_redis_url(capsys, url, shown):
    _print_banner("http://127.0.0.1:8088/", Settings(redis_url=url, jwt_secret=SECRET), None, Registry())
    printed = capsys.readouterr().out
    assert "s3cret" not in printed
    assert f"Redis:  {shown}" in printed


ISSUER_KEY = ec.generate_private_key(ec.SECP256R1())
ISSUER_PUBLIC_PEM = (
    ISSUER_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def test_hub_up_with_a_public_key_prints_no_token_it_would_refuse(hub_up, redis_url, namespace):
    hub = hub_up(
        HUB_REDIS_URL=redis_url,
        HUB_NAMESPACE=namespace,
        HUB_JWT_PUBLIC_KEY=ISSUER_PUBLIC_PEM,
        HUB_JWT_ALGORITHMS="ES256",
    )
    banner = hub.banner()
    printed = re.findall(r"eyJ[\w-]+\.[\w-]+\.[\w-]+", banner)
    refused = [token for token in printed if call(hub.url + "/api/v1/characters/jobs/nosuchjob", token)[0] == 401]
    print(f"\ntokens printed: {len(printed)}, refused by the hub: {len(refused)}")
    assert not printed, banner
    assert "export HUB_TOKEN=ey" not in banner
    assert "no token" in banner and "HUB_JWT_PUBLIC_KEY" in banner, banner
    # Tokens from the app's issuer (its private key) are what this hub takes.
    issued = jwt.encode({"sub": "demo", "exp": int(time.time()) + 600}, ISSUER_KEY, algorithm="ES256")
    assert call(hub.url + "/api/v1/characters/jobs/nosuchjob", issued)[0] == 404  # authenticated; no such job
    # Nor does the demo's sign-in hand out tokens the hub would refuse.
    assert call(hub.url + "/api/v1/dev/token", issued, {"user": "demo"})[0] == 404
    hub.process.send_signal(signal.SIGTERM)
    assert hub.process.wait(30) == 0
