"""`hub up`: an embedded Redis (unless HUB_REDIS_URL is set), the web server
and a worker, as child processes of this one; Ctrl-C or SIGTERM stops all
of them, web server and worker first, Redis last."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import dramatiq
from dramatiq.brokers.stub import StubBroker

from hub.errors import ConfigError
from hub.runtime.embedded import EmbeddedRedis
from hub.runtime.processes import die_with_parent
from hub.store import registry
from hub.store.settings import Settings
from hub.web.auth import issue_token

DEV_USER = "demo"
DEV_TOKEN_TTL = 24 * 3600
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def run_everything(data_dir: str | None = None) -> int:
    env = dict(os.environ)
    env.setdefault("HUB_JWT_SECRET", secrets.token_urlsafe(32))
    # Fail early, before starting anything, on a bad setting or a bad app
    # (its modules are imported here too; a stub broker keeps any plain
    # @dramatiq.actor in them away from Redis).
    early = Settings.from_env(env)
    dramatiq.set_broker(StubBroker())
    registry.load(early.app_modules, early.external_job_types)

    temporary = data_dir is None
    data_dir = data_dir or tempfile.mkdtemp(prefix="hub-")
    redis_server: EmbeddedRedis | None = None
    children: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if not env.get("HUB_REDIS_URL"):
            redis_server = EmbeddedRedis(os.path.join(data_dir, "redis")).start()
            env["HUB_REDIS_URL"] = redis_server.url
        settings = Settings.from_env(env)
        for command in (["serve", "--dev-tokens"], ["worker"]):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "hub", *command],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C reaches us; we stop them in order
                    preexec_fn=die_with_parent,
                )
            )
        url = f"http://{settings.host}:{settings.port}/"
        if not _wait_ready(url + "readyz", children, stop):
            if stop.is_set():
                return 0
            print("hub: the web server did not become ready; see the log above", file=sys.stderr)
            return 1
        _print_banner(url, settings, redis_server)
        while not stop.wait(0.5):
            for child in children:
                if child.poll() is not None:
                    print(f"hub: {child.args!r} exited with {child.returncode}; stopping", file=sys.stderr)
                    return 1
        return 0
    except ConfigError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if redis_server is not None:
            redis_server.stop()
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)


def _wait_ready(url: str, children: list[subprocess.Popen[bytes]], stop: threading.Event) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and not stop.is_set():
        if any(child.poll() is not None for child in children):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.1)
    return False


def _print_banner(url: str, settings: Settings, redis_server: EmbeddedRedis | None) -> None:
    token = issue_token(settings, DEV_USER, DEV_TOKEN_TTL)
    redis_note = str(settings.redis_url)
    if redis_server is not None:
        redis_note += f" (embedded, files in {redis_server.data_dir})"
    print(
        f"""
Realtime hub is running.

  URL:    {url}
  Token:  {token}
          (user "{DEV_USER}", valid 24 h; the signing key is new every `hub up`)
  Redis:  {redis_note}

Try it:
  export HUB_TOKEN={token}
  curl -N -H "Authorization: Bearer $HUB_TOKEN" {url}api/v1/sse/jobs/my
  curl -H "Authorization: Bearer $HUB_TOKEN" -H "Content-Type: application/json" \\
       -d '{{"name": "Ada", "description": "curious and brave"}}' {url}api/v1/characters

Press Ctrl-C to stop.
""",
        flush=True,
    )
