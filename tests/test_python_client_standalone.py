"""The Python client as a package of its own: it installs into a fresh
virtual environment with nothing else, and a worker process that has only
that package publishes an external job's progress while a user follows it
live through a connection that is cut mid-way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hub_client import HubClient

from hub.store.settings import Settings
from tests.support.environment import ROOT
from tests.support.jobs import assert_a_proper_job_story, history
from tests.support.tcp_proxy import TcpProxy
from tests.support.tokens import issue_service_token
from tests.support.waiting import wait_for
from tests.support.watching import Consumer, Lines

CLIENT = ROOT / "clients" / "python"
#: What the hub needs and the client must not.
HUB_ONLY_MODULES = ("tornado", "dramatiq", "redis", "jwt", "PIL", "valkey", "prometheus_client")


@pytest.fixture
def service_token(settings: Settings) -> Callable[[str], str]:
    return lambda name: issue_service_token(settings, name)


def clean_env() -> dict[str, str]:
    """The environment without anything that would let the venv see this checkout."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"):
        env.pop(name, None)
    return env


def run(*command: str | Path, **options: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        **options,
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh venv holding realtime-hub-client and nothing else.

    The wheel is built with this interpreter's setuptools (no index, no build
    isolation: fast and offline); the venv itself has no pip and no
    setuptools, and gets the wheel from this interpreter's pip."""
    where = tmp_path_factory.mktemp("client-venv")
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    source = shutil.copytree(CLIENT, where / "source", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    wheels = where / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, source)
    (wheel,) = wheels.glob("realtime_hub_client-*.whl")
    venv = where / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--no-deps", wheel)
    return python


def test_the_client_installs_alone_and_works_without_the_hub(client_python: Path) -> None:
    probe = textwrap.dedent(
        f"""
        import importlib, json, sys
        import hub_client, hub_client.watch
        from hub_client import HubClient, JobFinished, RunningJob
        missing = []
        for name in {HUB_ONLY_MODULES!r}:
            try:
                importlib.import_module(name)
            except ImportError:
                missing.append(name)
        print(json.dumps({{"file": hub_client.__file__, "version": hub_client.__version__, "missing": missing,
                          "prefix": sys.prefix}}))
        """
    )
    # -I: neither PYTHONPATH nor the user's site-packages, only the venv.
    found = json.loads(run(client_python, "-I", "-c", probe).stdout)
    assert found["missing"] == list(HUB_ONLY_MODULES)
    assert found["file"].startswith(found["prefix"]), "hub_client must come from the venv, not the checkout"
    assert not found["file"].startswith(str(ROOT))
    assert found["version"]

    # The typed marker ships, and so does the command.
    assert list(Path(found["file"]).parent.glob("py.typed"))
    usage = run(client_python.parent / "hub-watch", "--help").stdout
    assert "--type TYPE" in usage and "JOB_ID" in usage


WORKER = textwrap.dedent(
    """
    # A worker as a Celery task or an RQ job would be: the client and nothing else.
    import json
    import sys

    from hub_client import HubClient

    url, service_token, owner = sys.argv[1:4]
    hub = HubClient(url, service_token, retry_delay=0.1)
    created = hub.create_job("import", {"file": "orders.csv"}, owner=owner)
    print(json.dumps(created), flush=True)

    def wait_for_the_test(said):
        print(said, flush=True)
        assert sys.stdin.readline().strip() == "go"

    wait_for_the_test("created")
    with hub.run_job(created["jobId"], step="reading") as job:
        for percent in (10, 20):
            job.progress(percent, step=f"rows {percent}")
        wait_for_the_test("half")
        for percent in (40, 60):
            job.progress(percent, step=f"rows {percent}")
        wait_for_the_test("while cut")
        job.progress(80, step="rows 80")
        job.result = {"rows": 1200, "file": "orders.csv"}
    print("done", flush=True)
    """
)


@pytest.mark.hub_settings(external_job_types=("import",))
def test_a_worker_process_publishes_while_the_user_follows_through_a_cut(
    client_python: Path,
    hub_process: Callable[..., Any],
    token: Callable[..., str],
    service_token: Callable[..., str],
    settings: Settings,
    sync_redis: Any,
    tmp_path: Path,
) -> None:
    hub = hub_process(HUB_EXTERNAL_JOB_TYPES="import", HUB_SSE_RETRY_MS="100")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    worker = subprocess.Popen(
        [str(client_python), "-I", str(script), hub.url, service_token("billing"), "alice"],
        env=clean_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdin is not None

    def go() -> None:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()

    try:
        said = Lines(worker.stdout)
        created = json.loads(said.next() or "null")
        assert created["type"] == "import" and created["status"] == "queued"
        job_id = created["jobId"]
        assert created["links"]["sse"] == f"/api/v1/sse/jobs/import/{job_id}"
        assert said.next() == "created"

        with TcpProxy(hub.port) as proxy:
            follower = Consumer(HubClient(proxy.url, token("alice"), retry_delay=0.1).watch(job_id, "import"))
            first = follower.next()
            assert first["type"] == "initial_status" and first["status"] == "queued"
            wait_for(lambda: hub.metric("hub_connections", transport="sse") == 1)

            go()
            assert said.next() == "half"
            events = [first] + [follower.next() for _ in range(3)]  # active, 10, 20
            assert [e["progress"] for e in events] == [0, 0, 10, 20]

            assert proxy.cut(hold=True) == 1
            go()  # 40 and 60 are published while the follower is disconnected
            assert said.next() == "while cut"
            proxy.release()
            go()
            assert said.next() == "done"
            events += follower.rest()
            assert proxy.accepted >= 2, "the follower must have reconnected"
        assert worker.wait(30) == 0
    finally:
        worker.kill()
        worker.wait()

    # Every event exactly once, in order, from the job's first state to its end.
    ids = history(sync_redis, settings, job_id)
    assert [e["id"] for e in events] == ids
    assert_a_proper_job_story(events)
    assert [(e["status"], e["progress"], e.get("step")) for e in events[1:]] == [
        ("active", 0, "reading"),
        ("active", 10, "rows 10"),
        ("active", 20, "rows 20"),
        ("active", 40, "rows 40"),
        ("active", 60, "rows 60"),
        ("active", 80, "rows 80"),
        ("completed", 100, None),
    ]
    assert events[-1]["result"] == {"rows": 1200, "file": "orders.csv"}
    # The job is alice's: she reads it, and sees it among her jobs.
    alice = HubClient(hub.url, token("alice"))
    assert alice.get_job(job_id)["status"] == "completed"
    assert [job["jobId"] for job in alice.iter_jobs()] == [job_id]
