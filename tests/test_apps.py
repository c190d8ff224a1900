"""An app's own job types, named in HUB_APPS, run end to end in real `hub
serve` and `hub worker` processes; a misconfigured app stops every command
at start with one line that says what is wrong."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from actors.broker import make_broker
from actors.lifecycle import UNEXPECTED_REASON, undeclared_reason
from hub.runtime.embedded import free_port
from hub.store.keys import KeySpace
from hub.store.registry import JOB_OPTION, QUEUE
from hub.store.settings import Settings
from tests.support.environment import ROOT
from tests.support.http import Api
from tests.support.jobs import enqueue_job
from tests.support.tokens import SECRET
from tests.support.waiting import eventually

LIVE = pytest.mark.gen_test(timeout=90)

TRANSCODER = """
    from actors import Integer, Text, job_type, report

    @job_type("transcode", input={"url": Text(required=True), "height": Integer(minimum=144, default=720)})
    def transcode(url: str, height: int) -> dict:
        for done, step in enumerate(("probe", "video", "audio", "package"), 1):
            report(done * 20, step=step)
        return {"url": url, "height": height, "renditions": 4}
"""

#: A plain Dramatiq actor on Dramatiq's default queue, for `hub worker --import`.
PINGER = """
    import os

    import dramatiq
    import redis

    @dramatiq.actor
    def ping(key: str) -> None:
        redis.Redis.from_url(os.environ["HUB_REDIS_URL"]).set(key, "pong")
"""

#: Records at import where Dramatiq's global broker points.
BROKER_PROBE = """
    import json
    import os

    import dramatiq

    from actors import Text, job_type

    @dramatiq.actor
    def notify(text: str) -> None:
        pass

    broker = dramatiq.get_broker()
    with open(os.environ["PROBE_FILE"], "w") as probe:
        json.dump({"broker": type(broker).__name__, "namespace": getattr(broker, "namespace", None)}, probe)

    @job_type("probe", input={"text": Text()})
    def probe(text: str) -> None:
        notify.send(text)
"""


def write_module(folder: Path, name: str, source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def app_env(folder: Path, apps: str, **more: str) -> dict[str, str]:
    """Environment of a hub process whose app modules live in `folder`, outside the repository."""
    return {"PYTHONPATH": f"{ROOT}{os.pathsep}{folder}", "HUB_APPS": apps, **more}


async def start_job(
    ctx: Any, settings: Settings, job_type: str, actor: str, owner: str, job_input: dict[str, Any]
) -> str:
    """Creates a job and enqueues it as the hub does."""
    job_id = uuid.uuid4().hex
    await ctx.journal.create(job_id, owner, job_type, job_input=job_input)
    broker = make_broker(settings)
    try:
        broker.enqueue(
            dramatiq.Message(
                queue_name=QUEUE,
                actor_name=actor,
                args=(),
                kwargs=job_input,
                options={JOB_OPTION: {"id": job_id, "owner": owner, "type": job_type}},
                message_id=job_id,
            )
        )
    finally:
        broker.close()
    return job_id


def worker_ready_line(output: Path) -> str | None:
    for line in output.read_text(errors="replace").splitlines():
        if "worker ready" in line:
            return line
    return None


@LIVE
async def test_an_apps_job_type_runs_end_to_end(hub_process, worker, token, tmp_path):
    # Given an app module outside the repository, named in HUB_APPS
    apps = tmp_path / "apps"
    write_module(apps, "transcoder", TRANSCODER)
    log = tmp_path / "worker.log"
    worker(output=log, HUB_LOG_LEVEL="INFO", **app_env(apps, "transcoder"))
    hub = hub_process(**app_env(apps, "transcoder"))
    alice = Api(hub.url, token("alice"))

    # When alice starts a transcode job and follows it (all her jobs, from
    # before it starts: the worker may run it before a job stream opens)
    mine = await alice.stream("/api/v1/sse/jobs/my")
    assert mine.status == 200
    status, created = await alice.post("/api/v1/jobs", {"type": "transcode", "input": {"url": "s3://in.mp4"}})
    assert status == 202, created
    job_id = created["jobId"]
    assert created["links"]["sse"] == f"/api/v1/sse/jobs/transcode/{job_id}"
    updates = []
    while not updates or updates[-1]["status"] not in ("completed", "failed"):
        frame = await mine.frame()
        assert frame is not None, updates
        if frame.data and frame.data.get("jobId") == job_id and frame.data.get("type") != "initial_status":
            updates.append(frame.data)
    mine.close()

    # Then she sees it start, every step in order, and its result
    active = [(u["progress"], u.get("step")) for u in updates if u["status"] == "active"]
    assert active[0] == (0, "started")
    assert active[1:] == [(20, "probe"), (40, "video"), (60, "audio"), (80, "package")]
    assert [u["status"] for u in updates].count("completed") == 1
    final = updates[-1]
    assert final["status"] == "completed" and final["progress"] == 100
    assert final["result"] == {"url": "s3://in.mp4", "height": 720, "renditions": 4}
    # And the job's own stream, opened afterwards, tells its end and ends
    stream = await alice.stream(created["links"]["sse"])
    assert stream.status == 200
    assert [f.data["status"] for f in await stream.frames_until_end() if f.data and "status" in f.data] == ["completed"]

    # And the hub validates the type's input, as it declared it
    status, refused = await alice.post("/api/v1/jobs", {"type": "transcode", "input": {"height": 1080}})
    assert (status, refused["error"], refused["message"]) == (400, "bad_request", "url is required")
    response = await alice.get("/api/v1/job-types")
    described = {t["type"]: t for t in (await response.json_body())["data"]}
    assert described["transcode"]["runner"] == "actor"
    assert described["transcode"]["input"]["required"] == ["url"]

    # And the worker said at start what it serves
    line = await eventually(lambda: worker_ready_line(log))
    assert "job types: create_character" not in line
    assert re.search(r"job types: .*transcode \(actor transcode\)", line)
    assert "other actors: none; queues: hub-jobs" in line


@LIVE
async def test_without_the_examples_neither_hub_nor_worker_knows_them(
    ctx, settings, hub_process, worker, token, tmp_path
):
    # Given a deployment with its own app and HUB_EXAMPLE_JOBS=0
    apps = tmp_path / "apps"
    write_module(apps, "transcoder", TRANSCODER)
    env = app_env(apps, "transcoder", HUB_EXAMPLE_JOBS="0")
    log = tmp_path / "worker.log"
    worker(output=log, HUB_LOG_LEVEL="INFO", **env)
    hub = hub_process(**env)
    alice = Api(hub.url, token("alice"))

    # Then the hub has no route of the examples, and does not list them
    response = await alice.get("/api/v1/job-types")
    assert [t["type"] for t in (await response.json_body())["data"]] == ["transcode"]
    status, body = await alice.post("/api/v1/jobs", {"type": "character", "input": {"name": "Ada"}})
    assert (status, body["error"]) == (400, "bad_request")
    status, body = await alice.post("/api/v1/characters", {"name": "Ada"})
    assert (status, body["error"]) == (404, "not_found")
    status, body = await alice.post("/api/v1/media/images", {"prompt": "a fox"})
    assert (status, body["error"]) == (404, "not_found")

    # And the worker declares no example actor: it says so, and a character
    # job sent its way fails with the true reason
    line = await eventually(lambda: worker_ready_line(log))
    assert "job types: transcode (actor transcode); other actors: none; queues: hub-jobs" in line
    job_id = await start_job(ctx, settings, "character", "create_character", "alice", {"name": "Ada"})
    job = await eventually(lambda: _finished(ctx, job_id))
    assert job.state["status"] == "failed"
    assert job.state["failedReason"] == undeclared_reason("character", "create_character")


async def _finished(ctx: Any, job_id: str) -> Any:
    job = await ctx.history.job(job_id)
    return job if job is not None and job.state["status"] in ("completed", "failed") else None


@LIVE
async def test_a_job_for_an_actor_no_worker_declares_fails_once_with_the_true_reason(
    ctx, settings, worker, sync_redis, tmp_path
):
    # Given a worker that runs no job type at all
    log = tmp_path / "worker.log"
    worker(output=log, HUB_EXAMPLE_JOBS="0")
    await ctx.journal.create("lost", "alice", "transcode")

    # When a hub job for that actor reaches it
    enqueue_job(
        settings,
        "transcode",
        "lost",
        "alice",
        options={JOB_OPTION: {"id": "lost", "owner": "alice", "type": "transcode"}},
    )

    # Then the job fails, once, saying why (not that it waited too long)
    job = await eventually(lambda: _finished(ctx, "lost"))
    reason = "no worker runs job type 'transcode' (actor 'transcode' is not declared; is HUB_APPS set for the workers?)"
    assert job.state["status"] == "failed"
    assert job.state["failedReason"] == reason and job.state["result"] == {"error": reason}
    dead_letters = f"{settings.namespace}-dramatiq:{QUEUE}.XQ"
    await eventually(lambda: sync_redis.zcard(dead_letters) == 1)
    history = await ctx.redis.xrange(ctx.keys.job_events("lost"))
    assert [b'"status":"failed"' in fields[b"d"] for _, fields in history].count(True) == 1
    assert not any(b'"status":"active"' in fields[b"d"] for _, fields in history)

    # And the worker's log says so at ERROR
    await eventually(lambda: "ERROR actors.lifecycle[" in log.read_text() and reason in log.read_text())
    line = next(line for line in log.read_text().splitlines() if reason in line)
    assert " ERROR actors.lifecycle[" in line and "job lost failed" in line


@LIVE
async def test_a_plain_actor_imported_into_the_worker_runs_on_its_own_queue(settings, worker, sync_redis, tmp_path):
    # Given `hub worker --import pinger`, whose actor is on Dramatiq's default queue
    apps = tmp_path / "apps"
    write_module(apps, "pinger", PINGER)
    log = tmp_path / "worker.log"
    worker("pinger", output=log, HUB_LOG_LEVEL="INFO", PYTHONPATH=f"{ROOT}{os.pathsep}{apps}")
    line = await eventually(lambda: worker_ready_line(log))
    assert "other actors: ping; queues: default, hub-jobs" in line

    # When the app sends it a message
    key = f"{settings.namespace}:ping"
    broker = make_broker(settings)
    try:
        broker.enqueue(dramatiq.Message(queue_name="default", actor_name="ping", args=(key,), kwargs={}, options={}))
    finally:
        broker.close()

    # Then it runs
    assert await eventually(lambda: sync_redis.get(key) == b"pong")


@LIVE
async def test_a_plain_actor_in_an_app_module_lands_on_the_hubs_broker(
    settings, hub_process, worker, sync_redis, tmp_path
):
    # Given an app module with a plain @dramatiq.actor that its job type sends to
    apps = tmp_path / "apps"
    write_module(apps, "prober", BROKER_PROBE)
    serve_probe, worker_probe = tmp_path / "serve.json", tmp_path / "worker.json"

    # When hub serve and hub worker import it
    hub_process(**app_env(apps, "prober", PROBE_FILE=str(serve_probe)))
    worker(**app_env(apps, "prober", PROBE_FILE=str(worker_probe)))

    # Then both see the hub's broker as Dramatiq's global one, not a default one at localhost
    expected = {"broker": "RedisBroker", "namespace": KeySpace(settings.namespace).dramatiq_namespace}
    assert json.loads(serve_probe.read_text()) == expected
    await eventually(worker_probe.exists)
    assert await eventually(lambda: worker_probe.read_text() and json.loads(worker_probe.read_text()) == expected)


STACKED = """
    import dramatiq

    from actors import Text, job_type, report

    @job_type("shout", input={"word": Text(required=True)})
    @dramatiq.actor(queue_name="hub-jobs", max_retries=0)
    def shout(word: str) -> dict:
        report(50, step="shouting")
        if word == "whisper":
            raise ValueError("cannot shout a whisper")
        return {"word": word.upper()}
"""


@LIVE
async def test_a_job_type_stacked_on_a_dramatiq_actor_runs_with_that_actors_options(
    hub_process, worker, token, tmp_path
):
    # Given a job type declared on top of the app's own @dramatiq.actor (no retries)
    apps = tmp_path / "apps"
    write_module(apps, "shouter", STACKED)
    worker(**app_env(apps, "shouter"))
    hub = hub_process(**app_env(apps, "shouter"))
    alice = Api(hub.url, token("alice"))

    async def run(word: str) -> dict[str, Any]:
        status, created = await alice.post("/api/v1/jobs", {"type": "shout", "input": {"word": word}})
        assert status == 202, created
        stream = await alice.stream(created["links"]["sse"])
        return {"statuses": [f.data["status"] for f in (await stream.frames_until_end())[2:]], **created}

    # Then it runs as a job type
    done = await run("hello")
    assert done["statuses"][-1] == "completed"
    response = await alice.get(done["links"]["status"])
    assert (await response.json_body())["data"]["result"] == {"word": "HELLO"}
    # And its actor's options hold: a failure is not retried
    failed = await run("whisper")
    assert "retrying" not in failed["statuses"] and failed["statuses"][-1] == "failed"
    response = await alice.get(failed["links"]["status"])
    assert (await response.json_body())["data"]["failedReason"] == f"ValueError: {UNEXPECTED_REASON}"


# --- Misconfigured apps: every command refuses to start, with one line. ---

DUPLICATE = """
    from actors import job_type

    @job_type("transcode")
    def transcode(**job_input):
        return job_input
"""

CASES: dict[str, tuple[dict[str, str], str, str]] = {
    # case: (modules to write, HUB_APPS, the one line on stderr as a regex)
    "unknown module": (
        {},
        "no_such_app",
        re.escape(
            "hub: HUB_APPS: no module named 'no_such_app' (is its folder on PYTHONPATH, or the current directory?)"
        ),
    ),
    "module raises on import": (
        {"exploding": "import os\n\nraise RuntimeError('the licence server is down')\n"},
        "exploding",
        re.escape("hub: HUB_APPS: importing 'exploding' failed: RuntimeError: the licence server is down (at ")
        + r".*exploding\.py:3\)",
    ),
    "duplicate type across modules": (
        {"app_one": DUPLICATE, "app_two": DUPLICATE},
        "app_one,app_two",
        re.escape("hub: job type 'transcode' is registered twice (in app_one and app_two)"),
    ),
    "app reuses an example's name": (
        {
            "mine": """
                from actors import Text, job_type

                @job_type("character", input={"name": Text()})
                def my_character(name: str) -> dict:
                    return {}
            """
        },
        "mine",
        re.escape(
            "hub: job type 'character' is registered twice "
            "(in actors.examples and mine; HUB_EXAMPLE_JOBS=0 turns the examples off)"
        ),
    ),
    "invalid type name": (
        {
            "badname": """
                from actors import job_type

                @job_type("Transcode!")
                def transcode(**job_input):
                    pass
            """
        },
        "badname",
        re.escape("hub: HUB_APPS: badname: job type name 'Transcode!' must match [a-z][a-z0-9_-]{0,31}"),
    ),
    "actor on another queue": (
        {
            "wrongqueue": """
                import dramatiq

                from actors import job_type

                @job_type("transcode")
                @dramatiq.actor(queue_name="default")
                def transcode(**job_input):
                    pass
            """
        },
        "wrongqueue",
        re.escape(
            "hub: HUB_APPS: wrongqueue: job type 'transcode': actor 'transcode' is declared on queue 'default', "
            "but the hub enqueues this type on 'hub-jobs': declare it with @job_type alone"
        ),
    ),
    "two types, one actor name": (
        {
            "sameactor": """
                from actors import job_type

                @job_type("transcode", actor_name="run")
                def transcode(**job_input):
                    pass

                @job_type("resize", actor_name="run")
                def resize(**job_input):
                    pass
            """
        },
        "sameactor",
        re.escape(
            "hub: job types 'resize' and 'transcode' use the same actor name 'run' (in sameactor): "
            "give one another actor_name"
        ),
    ),
    "input the function cannot take": (
        {
            "mismatch": """
                from actors import Text, job_type

                @job_type("transcode", input={"url": Text(required=True)})
                def transcode(source: str) -> None:
                    pass
            """
        },
        "mismatch",
        re.escape("hub: HUB_APPS: mismatch: job type 'transcode': 'transcode' cannot take its input fields (url): ")
        + ".+",
    ),
    "module without job types": (
        {"empty": "import os\n"},
        "empty",
        re.escape(
            "hub: HUB_APPS: module 'empty' defines no job type "
            "(declare them at module level with @job_type or external_job_type)"
        ),
    ),
}


def run_hub(command: list[str], env: dict[str, str], cwd: Path | None = None, python: list[str] | None = None) -> Any:
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    full_env.update(HUB_JWT_SECRET=SECRET, HUB_LOG_LEVEL="WARNING", **env)
    return subprocess.run(
        [sys.executable, *(python or []), "-m", "hub", *command],
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )


def misconfigured(tmp_path: Path, case: str) -> tuple[Path, str, str]:
    modules, apps, expected = CASES[case]
    folder = tmp_path / "apps"
    folder.mkdir()
    for name, source in modules.items():
        write_module(folder, name, source)
    return folder, apps, expected


def assert_refused(result: Any, expected: str) -> None:
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2, result.stderr.decode()
    assert len(lines) == 1, lines
    assert re.fullmatch(expected, lines[0]), lines[0]


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_misconfigured_app_stops_the_process_at_start(settings, tmp_path, command, case):
    folder, apps, expected = misconfigured(tmp_path, case)
    env = app_env(folder, apps, HUB_REDIS_URL=settings.redis_url or "", HUB_NAMESPACE=settings.namespace)
    result = run_hub([command], {**env, "HUB_PORT": str(free_port())})
    assert_refused(result, expected)


IMPORT_CASES: dict[str, tuple[dict[str, str], str]] = {
    "a job type in an --import module": (
        {"sneaky": DUPLICATE},
        "hub: hub worker --import sneaky: it defines job type 'transcode'; job types go in HUB_APPS, "
        "--import is for plain Dramatiq actors",
    ),
    "a plain actor with a job type's actor name": (
        {
            "clash": """
                import dramatiq

                @dramatiq.actor(queue_name="hub-jobs")
                def create_character(**job_input):
                    pass
            """
        },
        "hub: hub worker --import: importing 'clash' failed: ValueError: "
        "An actor named 'create_character' is already registered. (at {folder}/clash.py:4)",
    ),
    "an unknown --import module": (
        {},
        "hub: hub worker --import: no module named 'clash' (is its folder on PYTHONPATH, or the current directory?)",
    ),
}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_hub_worker_refuses_a_bad_import(settings, tmp_path, case):
    modules, expected = IMPORT_CASES[case]
    for name, source in modules.items():
        write_module(tmp_path, name, source)
    module = next(iter(modules), "clash")
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}", "HUB_REDIS_URL": settings.redis_url or ""}
    result = run_hub(["worker", "--import", module], {**env, "HUB_NAMESPACE": settings.namespace})
    assert_refused(result, re.escape(expected.format(folder=tmp_path)))


@pytest.mark.parametrize("case", list(CASES))
def test_hub_up_refuses_a_misconfigured_app_before_starting_anything(tmp_path, case):
    folder, apps, expected = misconfigured(tmp_path, case)
    data = tmp_path / "data"
    result = run_hub(["up", "--data-dir", str(data)], {**app_env(folder, apps), "HUB_PORT": str(free_port())})
    assert_refused(result, expected)
    assert not (data / "redis").exists(), "no Redis was started"
    assert b"Realtime hub is running" not in result.stdout


def test_an_app_next_to_where_the_hub_starts_needs_no_pythonpath(tmp_path):
    # Given an app module in the current directory, and nothing on PYTHONPATH
    # but the hub itself (-P: Python adds no directory of its own, as when
    # the `hub` script runs)
    write_module(tmp_path, "exploding", CASES["module raises on import"][0]["exploding"])
    result = run_hub(
        ["worker"],
        {"PYTHONPATH": str(ROOT), "HUB_APPS": "exploding", "HUB_REDIS_URL": "redis://127.0.0.1:1"},
        cwd=tmp_path,
        python=["-P"],
    )
    # Then the hub finds it (and here refuses it, which proves it was imported)
    assert_refused(result, re.escape("hub: HUB_APPS: importing 'exploding' failed: RuntimeError") + ".*")
