"""docs/JOBS.md, run as printed: every example is taken from the page itself
(so the page cannot drift from what works) and run against real processes:
`hub up` with an app module that lives outside the repository, a real
Chromium following the job, `hub watch`, a backend module, a Node worker
with plain fetch and a Celery task."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.runtime.embedded import free_port
from hub.runtime.processes import stop_process
from tests.support.environment import ROOT, need

DOC = ROOT / "docs" / "JOBS.md"
EXAMPLE = re.compile(r"<!-- example: (?P<name>[^>]+?) -->\n```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)
STARTUP_TIMEOUT = 60.0
WAIT_MS = 30_000


def examples() -> dict[str, str]:
    found = {match["name"]: match["code"] for match in EXAMPLE.finditer(DOC.read_text(encoding="utf-8"))}
    assert found, "no examples found in docs/JOBS.md"
    return found


def shell(code: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> str:
    """Runs a shell example as printed; returns its standard output."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done.stdout


class HubUp:
    """A `hub up` started from an example, as a shell would run it."""

    def __init__(self, code: str, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.port = int(env["HUB_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as sink:
            self.process = subprocess.Popen(
                ["bash", "-c", code], cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.token = self._wait_for_banner()

    def _wait_for_banner(self) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            match = re.search(r"Token:\s+(\S+)", text)
            if match:
                return match.group(1)
            if self.process.poll() is not None:
                raise AssertionError(f"hub up exited with {self.process.returncode}:\n{text}")
            time.sleep(0.05)
        raise AssertionError(f"hub up printed no token within {STARTUP_TIMEOUT}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
        stop_process(self.process, 30)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A folder outside the repository, like an app's own checkout."""
    folder = tmp_path / "app"
    folder.mkdir()
    return folder


@pytest.fixture
def hub_env(redis_url: str, namespace: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the app's folder is found as the current one
    env.update(
        HUB_PORT=str(free_port()),
        HUB_REDIS_URL=redis_url,
        HUB_NAMESPACE=namespace,
        HUB_LOG_LEVEL="WARNING",
        HUB_WORKER_METRICS_PORT="0",
    )
    return env


@pytest.fixture
def hub_up(app_dir: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[HubUp] = []

    def start(example: str, env: dict[str, str]) -> HubUp:
        hub = HubUp(examples()[example], env, app_dir, tmp_path / f"hub-up-{len(started)}.log")
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.stop()


def write_example(folder: Path, name: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(examples()[name], encoding="utf-8")
    return path


def test_every_example_is_run_by_this_file() -> None:
    run_here = Path(__file__).read_text(encoding="utf-8")
    for name in examples():
        assert f'"{name}"' in run_here, f"docs/JOBS.md example {name!r} is not run by a test"


# Your own job type: a module outside the repository, HUB_APPS, a browser, hub watch ----------


PAGE = """<!doctype html><meta charset="utf-8">
<progress max="100" value="0"></progress><output></output>
<script>
  window.seen = [];
  const record = () => window.seen.push([document.querySelector('progress').value,
                                         document.querySelector('output').textContent]);
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                       attributes: true});
</script>"""


def test_your_own_job_type_streams_to_a_browser_and_to_hub_watch(app_dir, hub_env, hub_up, browser):
    write_example(app_dir, "myapp/jobs.py")
    hub = hub_up("hub up with an app", hub_env)
    env = dict(hub_env, HUB_URL=hub.url, HUB_TOKEN=hub.token)

    page = browser.new_page()
    page.goto(hub.url + "/healthz")
    page.set_content(PAGE)
    job = json.loads(shell(examples()["start a job"], env, app_dir))
    assert job["type"] == "transcode" and job["status"] == "queued"
    page.evaluate("([jobId, token]) => { window.JOB_ID = jobId; window.HUB_TOKEN = token; }", [job["jobId"], hub.token])
    page.add_script_tag(content=examples()["browser"], type="module")
    page.wait_for_function("document.querySelector('output').textContent === 'cat.mov.720p.mp4'", timeout=WAIT_MS)
    values = [value for value, _ in page.evaluate("window.seen")]
    assert values[-1] == 100
    assert values == sorted(values) and any(0 < v < 100 for v in values), values  # followed live, step by step
    page.close()

    # hub watch, on a second job, from its start to its end.
    second = json.loads(shell(examples()["start a job"], env, app_dir))
    output = shell(examples()["hub watch"], dict(env, JOB_ID=second["jobId"]), app_dir)
    assert "completed" in output, output
    assert "cat.mov.720p.mp4" in output, output


# From your backend, in any language ---------------------------------------------------------


def test_a_backend_a_node_worker_and_a_celery_task_publish_external_jobs(app_dir, hub_env, hub_up, browser):
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    try:
        import celery  # noqa: F401
    except ImportError:
        need(False, "celery is not installed")
    env = dict(hub_env)
    env["HUB_JWT_SECRET"] = shell(examples()["signing key"] + 'echo "$HUB_JWT_SECRET"\n', env, app_dir).strip()
    hub = hub_up("hub up with an external type", env)
    env["HUB_URL"] = hub.url
    env["HUB_SERVICE_TOKEN"] = shell(examples()["service token"] + 'echo "$HUB_SERVICE_TOKEN"\n', env, app_dir).strip()
    write_example(app_dir, "backend/reports.py")
    write_example(app_dir, "worker.mjs")
    write_example(app_dir, "tasks.py")

    def start_report(user: str) -> dict[str, Any]:
        code = f"from backend.reports import start_report; print(json.dumps(start_report({user!r}, '2026-11')))"
        return dict(json.loads(run_python("import json; " + code, env, app_dir)))

    # The Node worker, while alice's browser follows the stream URL her backend handed her.
    answer = start_report("alice")
    page = browser.new_page()
    page.goto(hub.url + "/healthz")
    page.evaluate(
        """(stream) => { window.events = []; const source = new EventSource(stream);
                        source.onmessage = (m) => window.events.push([m.lastEventId, JSON.parse(m.data)]); }""",
        answer["stream"],
    )
    page.wait_for_function("window.events.length >= 2", timeout=WAIT_MS)  # connected, initial_status
    done = subprocess.run([node, "worker.mjs", answer["jobId"]], cwd=app_dir, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page.wait_for_function("window.events.some(([, e]) => e.status === 'completed')", timeout=WAIT_MS)
    updates = [
        (event["status"], event["progress"], event.get("step"))
        for _, event in page.evaluate("window.events")
        if event["type"] == "job_update"
    ]
    assert updates == [
        ("active", 0, "started"),
        ("active", 25, "query"),
        ("active", 50, "aggregate"),
        ("active", 75, "render"),
        ("completed", 100, None),
    ]
    ids = [event_id for event_id, event in page.evaluate("window.events") if event["type"] == "job_update"]
    assert len(set(ids)) == len(ids)
    page.close()

    # The Celery task, run by Celery itself (eagerly: no broker needed for the check).
    answer = start_report("bob")
    run_python(f"from tasks import build_report; build_report.apply(args=({answer['jobId']!r},)).get()", env, app_dir)
    job = json.loads(
        run_python(
            f"import json; from backend.reports import hub; print(json.dumps(hub.get_job({answer['jobId']!r})))",
            env,
            app_dir,
        )
    )
    assert job["status"] == "completed" and job["result"] == {"rows": 1234}, job
    assert job["owner"] == "bob"


def run_python(code: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"
    return done.stdout
