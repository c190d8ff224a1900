"""What a process does at its edges: a busy port, a key it cannot sign
with, a secret too short to be safe, a full Redis, and where a worker's
metrics listen. Real `hub` processes and real Valkey servers throughout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hub.errors import ConfigError
from hub.runtime.embedded import EmbeddedRedis, free_port
from hub.store.settings import Settings
from tests.support.environment import ROOT
from tests.support.http import Response, request
from tests.support.tokens import SECRET
from tests.support.waiting import eventually

RUN_TIMEOUT = 30.0


def run_hub(*args: str, **env_overrides: str) -> subprocess.CompletedProcess[bytes]:
    """Runs a `hub` command to its end (bounded) and returns what it did."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_WORKER_METRICS_PORT="0", PYTHONPATH=str(ROOT))
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=RUN_TIMEOUT,
    )


def port_in_use_line(port: int) -> str:
    return f"hub: port {port} on 127.0.0.1 is in use (set HUB_PORT to another port)"


def test_hub_serve_on_a_busy_port_fails_with_one_line_naming_HUB_PORT(hub_process, redis_url, namespace):
    other = hub_process()
    started = time.monotonic()
    result = run_hub(
        "serve", HUB_PORT=str(other.port), HUB_REDIS_URL=redis_url, HUB_NAMESPACE=namespace, HUB_JWT_SECRET=SECRET
    )
    elapsed = time.monotonic() - started
    stderr = result.stderr.decode(errors="replace")
    print(f"\nhub serve on a busy port: exit {result.returncode} after {elapsed:.2f} s")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == port_in_use_line(other.port)


ISSUER_KEY = ec.generate_private_key(ec.SECP256R1())
ISSUER_PUBLIC_PEM = (
    ISSUER_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.mark.parametrize("also_a_secret", [False, True], ids=["public-key", "public-key-and-secret"])
def test_hub_token_with_a_public_key_fails_clearly(also_a_secret):
    """The hub only verifies such tokens: the app's issuer holds the private
    key. A token signed with a secret beside it would be refused."""
    extra = {"HUB_JWT_SECRET": SECRET} if also_a_secret else {}
    result = run_hub(
        "token", "--user", "ada", HUB_JWT_PUBLIC_KEY=ISSUER_PUBLIC_PEM, HUB_JWT_ALGORITHMS="ES256", **extra
    )
    stderr = result.stderr.decode(errors="replace").strip()
    print(f"\nhub token with a public key: exit {result.returncode}: {stderr or result.stdout.decode()[:40]}")
    assert result.returncode == 2
    assert result.stdout == b"", "no token printed"
    assert len(stderr.splitlines()) == 1 and stderr.startswith("hub: ") and "HUB_JWT_PUBLIC_KEY" in stderr, stderr


@pytest.mark.parametrize("command", [("token", "--user", "ada"), ("serve",), ("worker",), ("up",)])
def test_a_jwt_secret_shorter_than_32_bytes_is_refused_at_start(command, redis_url, namespace):
    env = {"HUB_REDIS_URL": redis_url, "HUB_NAMESPACE": namespace, "HUB_PORT": str(free_port())}
    started = time.monotonic()
    try:
        result = run_hub(*command, HUB_JWT_SECRET="s" * 31, **env)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"hub {command[0]} started with a 31-byte secret") from None
    elapsed = time.monotonic() - started
    stderr = result.stderr.decode(errors="replace").strip()
    print(f"\nhub {command[0]} with a 31-byte secret: exit {result.returncode} after {elapsed:.2f} s")
    assert result.returncode == 2, stderr
    assert result.stdout == b""
    assert stderr == "hub: HUB_JWT_SECRET must be at least 32 bytes long (HS256 needs a 256-bit key)", stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_without_a_redis_url_say_so_in_one_line(command):
    result = run_hub(command, HUB_JWT_SECRET=SECRET, HUB_PORT=str(free_port()))
    stderr = result.stderr.decode(errors="replace").strip()
    print(f"\nhub {command} without HUB_REDIS_URL: exit {result.returncode}: {stderr}")
    assert result.returncode == 2, stderr
    assert stderr == "hub: HUB_REDIS_URL is not set (hub up starts an embedded Redis for you)", stderr


def test_the_secret_bound_counts_bytes():
    Settings.from_env({"HUB_JWT_SECRET": "s" * 32})
    Settings.from_env({"HUB_JWT_SECRET": "é" * 16})  # 2 bytes each in UTF-8
    with pytest.raises(ConfigError, match="HUB_JWT_SECRET"):
        Settings.from_env({"HUB_JWT_SECRET": "é" * 15 + "s"})


@pytest.mark.gen_test(timeout=90)
async def test_a_full_store_answers_job_creation_with_503_json(hub_process, tmp_path, token, namespace):
    """With `maxmemory-policy noeviction` a full Redis refuses writes (OOM)
    instead of dropping history; the hub says so instead of failing with 500."""
    server = EmbeddedRedis(str(tmp_path / "redis"), maxmemory="4mb").start()
    client = redis.Redis(port=server.port)
    try:
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        log_path = tmp_path / "hub.log"
        hub = hub_process(HUB_REDIS_URL=server.url, HUB_LOG_LEVEL="INFO", output=log_path)
        filler = [f"{namespace}:filler:{n}" for n in range(200)]  # 12.5 MiB at most
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for key in filler:
                client.set(key, b"x" * 64 * 1024)

        started = time.perf_counter()
        answer, body = await post_job(hub.url, token("olga"))
        elapsed_ms = 1000 * (time.perf_counter() - started)
        print(f"\nPOST on a full store: {answer.status} in {elapsed_ms:.1f} ms: {body.decode()}")
        assert answer.status == 503, body
        assert answer.headers["content-type"].startswith("application/json")
        assert "retry-after" in answer.headers
        error = json.loads(body)
        assert error["error"] == "unavailable" and "full" in error["message"], error
        log = log_path.read_text(errors="replace")
        assert "Traceback" not in log and "uncaught exception" not in log, log
        assert "POST /api/v1/characters (127.0.0.1): Redis is full (maxmemory): it refuses writes" in log, log

        # Room again (jobs expire, an operator raises the bound): jobs start again.
        client.delete(*filler)
        answer, body = await post_job(hub.url, token("olga"))
        assert answer.status == 202, body
    finally:
        client.close()
        server.stop()


async def post_job(base_url: str, bearer: str) -> tuple[Response, bytes]:
    answer = await request(
        base_url + "/api/v1/characters",
        method="POST",
        headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
        body=json.dumps({"name": "Ada"}).encode(),
    )
    return answer, await answer.body()


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port` (any process),
    read from the kernel's tables."""
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            rows = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address, _, hex_port = fields[1].rpartition(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, packed))
    return found


@pytest.mark.gen_test(timeout=60)
async def test_a_workers_metrics_listen_on_HUB_HOST_only(worker):
    port = free_port()
    worker(HUB_WORKER_METRICS_PORT=str(port), HUB_HOST="127.0.0.1")

    def served() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as answer:
                return answer.status == 200 and b"hub_worker_jobs_started" in answer.read()
        except OSError:
            return False

    await eventually(served, timeout=30)
    addresses = listening_addresses(port)
    print(f"\nworker metrics listening on {sorted(addresses)}")
    assert addresses == {"127.0.0.1"}, addresses
