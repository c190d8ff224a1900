"""`hub up`: an embedded Redis (unless HUB_REDIS_URL is set), the web server
(one process per core unless HUB_PROCESSES says otherwise) and a worker, as
child processes of this one; Ctrl-C or SIGTERM stops all
of them in order: the web server, then the worker (it finishes or hands back
its jobs while Redis still answers), then Redis."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading

import dramatiq
from dramatiq.brokers.stub import StubBroker

from hub.errors import ConfigError
from hub.runtime.embedded import EmbeddedRedis
from hub.runtime.ports import check_free
from hub.runtime.processes import answers_ok, die_with_parent, stop_process, wait_ready
from hub.store import registry
from hub.store.settings import Settings
from hub.web.auth import issue_token
from hub.web.handlers.dev import DEV_TOKEN_TTL

DEV_USER = "demo"
READY_TIMEOUT = 30.0
#: How long each child gets to stop after SIGTERM before it is killed: the
#: web server drains for up to 10 s (and gives its own processes 15 s); a
#: worker waits up to 10 s for its jobs, then as long again for its
#: consumers to hand back what they hold.
STOP_TIMEOUTS = {"serve": 20.0, "worker": 25.0}
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def run_everything(data_dir: str | None = None) -> int:
    env = dict(os.environ)
    env.setdefault("HUB_JWT_SECRET", secrets.token_urlsafe(32))
    checked = Settings.from_env(env)  # fail early, before starting anything, on a bad setting
    # or a bad app (imported here too, on a stub broker: a plain
    # @dramatiq.actor in it stays away from Redis)
    dramatiq.set_broker(StubBroker())
    job_types = registry.load(checked.app_modules, checked.external_job_types)
    check_free(checked.host, checked.port)  # or another hub would answer for this one

    temporary = data_dir is None
    data_dir = data_dir or tempfile.mkdtemp(prefix="hub-")
    redis_server: EmbeddedRedis | None = None
    children: dict[str, subprocess.Popen[bytes]] = {}
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if not env.get("HUB_REDIS_URL"):
            redis_server = EmbeddedRedis(os.path.join(data_dir, "redis"), maxmemory=checked.embedded_maxmemory).start()
            env["HUB_REDIS_URL"] = redis_server.url
        if checked.processes is None:
            env["HUB_PROCESSES"] = "0"  # one web-server process per core
        settings = Settings.from_env(env)
        # The demo page's sign-in issues tokens; with a public key the app's
        # issuer does, and a token from here would be refused.
        dev_tokens = [] if settings.jwt_public_key else ["--dev-tokens"]
        for command in (["serve", *dev_tokens], ["worker"]):
            children[command[0]] = subprocess.Popen(
                [sys.executable, "-m", "hub", *command],
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us; we stop them in order
                preexec_fn=die_with_parent,
            )
        url = f"http://{settings.host}:{settings.port}/"
        ready = answers_ok(url + "readyz")
        if not wait_ready(ready, watch=children.values(), timeout=READY_TIMEOUT, interval=0.1, stop=stop):
            if stop.is_set():
                return 0
            print("hub: the web server did not become ready; see the log above", file=sys.stderr)
            return 1
        _print_banner(url, settings, redis_server, job_types)
        while not stop.wait(0.5):
            for child in children.values():
                if child.poll() is not None:
                    print(f"hub: {child.args!r} exited with {child.returncode}; stopping", file=sys.stderr)
                    return 1
        return 0
    except ConfigError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    finally:
        # One after the other, in the order they were started: no new job
        # arrives while the worker finishes, and Redis outlives them both.
        for name, child in children.items():
            stop_process(child, STOP_TIMEOUTS[name])
        if redis_server is not None:
            redis_server.stop()
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)


def redacted(url: str) -> str:
    """`url` with any password in it (user info or `?password=`) shown as ***."""
    scheme, sep, rest = url.partition("://")
    if sep:
        # Up to the last "@" before the query: a password someone forgot to
        # percent-encode ("/", "@") is hidden whole, not cut at its first "/".
        end = min((i for i in (rest.find(c) for c in "?#") if i >= 0), default=len(rest))
        userinfo, at, location = rest[:end].rpartition("@")
        if at and ":" in userinfo:
            url = f"{scheme}://{userinfo.split(':', 1)[0]}:***@{location}{rest[end:]}"
    return _QUERY_PASSWORD.sub(r"\1***", url)


def _print_banner(
    url: str, settings: Settings, redis_server: EmbeddedRedis | None, job_types: registry.Registry
) -> None:
    redis_note = redacted(settings.require_redis_url())
    if redis_server is not None:
        bound = f"up to {redis_server.maxmemory}, " if redis_server.maxmemory not in (None, "0") else ""
        redis_note += f" (embedded, {bound}files in {redis_server.data_dir})"
    try:
        token = issue_token(settings, DEV_USER, DEV_TOKEN_TTL)
    except ConfigError as exc:
        token_note = textwrap.fill(str(exc), width=78, subsequent_indent=" " * 10)
        export = "  export HUB_TOKEN=...   # a token from your app's issuer"
    else:
        token_note = f'{token}\n          (user "{DEV_USER}", valid 24 h; the signing key is new every `hub up`)'
        export = f"  export HUB_TOKEN={token}"
    print(
        f"""
Realtime hub is running.

  URL:    {url}
  Token:  {token_note}
  Redis:  {redis_note}

Try it:
{export}
  curl -N -H "Authorization: Bearer $HUB_TOKEN" {url}api/v1/sse/jobs/my
{_start_a_job(url, job_types)}
Press Ctrl-C to stop.
""",
        flush=True,
    )


def _start_a_job(url: str, job_types: registry.Registry) -> str:
    """The banner's second command: start a job of the first type the hub runs."""
    runnable = [job for job in job_types if not job.external]
    if not runnable:
        return f"  (no job type runs here: see {url}api/v1/job-types and docs/JOBS.md)"
    job = runnable[0]
    body = json.dumps({"type": job.name, "input": job.example or {}})
    return (
        '  curl -H "Authorization: Bearer $HUB_TOKEN" -H "Content-Type: application/json" \\\n'
        f"       -d '{body}' {url}api/v1/jobs"
    )
