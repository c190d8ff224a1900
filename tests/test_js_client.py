"""The JavaScript client's own tests (`node --test`), run against a real hub
and a real worker that this test starts; and what the client shares with the
hub: the terminal statuses, and knowing no job type by name."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from hub.store import wire
from hub.store.journal import Journal
from tests.support.environment import ROOT, need
from tests.support.tokens import SECRET

JS = ROOT / "clients" / "js"
STATIC = ROOT / "hub" / "web" / "static"
USER_LIMIT = 3
#: A job type the Node tests move on themselves, as an app's worker would.
EXTERNAL = "report"
#: The example job types' names (and their seed paths' segments), as code would spell them.
EXAMPLE_NAMES = re.compile(r"(?<![@\w])(character|media)", re.IGNORECASE)


def node_or_skip() -> str:
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    assert node is not None
    return node


def test_the_client_ends_a_job_on_the_hubs_terminal_statuses():
    node = node_or_skip()
    script = "import('./hub-client.js').then((m) => console.log(JSON.stringify(m.TERMINAL_STATUSES)))"
    output = subprocess.run(
        [node, "--input-type=module", "-e", script], cwd=JS, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert set(json.loads(output)) == set(wire.TERMINAL_STATUSES)
    assert len(json.loads(output)) == len(wire.TERMINAL_STATUSES)


def test_the_client_and_the_demo_page_name_no_job_type():
    """Job types are the hub's data: the client and the page learn them from
    GET /api/v1/job-types (their tests and docs may name the examples)."""
    sources = [
        path
        for folder in (JS, STATIC)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and not {"node_modules", "test"} & set(path.relative_to(folder).parts)
        and path.suffix in {".js", ".ts", ".html", ".css", ".json"}
    ]
    assert any(path.name == "app.js" for path in sources) and any(path.name == "hub-client.js" for path in sources)
    named = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if EXAMPLE_NAMES.search(line)
    ]
    assert named == []


@pytest.mark.hub_settings(job_step_seconds=0.05)
def test_javascript_client(hub_process, worker, settings, sync_redis):
    node = node_or_skip()
    need((JS / "node_modules" / "eventsource").is_dir(), "run `npm ci --prefix clients/js` first (tox does)")
    hub = hub_process(HUB_MAX_CONNECTIONS_PER_USER=str(USER_LIMIT), HUB_EXTERNAL_JOB_TYPES=EXTERNAL)
    worker()
    # A job that stays queued (no worker is ever asked to run it).
    Journal(sync_redis, settings).create("idle-job", "idle-user", "character")
    env = dict(
        os.environ,
        HUB_URL=hub.url,
        HUB_JWT_SECRET=SECRET,
        HUB_MAX_CONNECTIONS_PER_USER=str(USER_LIMIT),
        IDLE_JOB_ID="idle-job",
        IDLE_JOB_USER="idle-user",
        EXTERNAL_JOB_TYPE=EXTERNAL,
    )
    # JS_TEST_NAME_PATTERN=regex runs only the Node tests whose name matches.
    pattern = os.environ.get("JS_TEST_NAME_PATTERN")
    only = [f"--test-name-pattern={pattern}"] if pattern else []
    result = subprocess.run(
        [node, "--test", "--test-timeout=180000", "--test-reporter=spec", *only, "test/"],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(result.stdout[-20000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
