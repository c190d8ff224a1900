"""The JavaScript client's own tests (`node --test`), run against a real hub
and a real worker that this test starts."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from hub.store.journal import Journal
from tests.conftest import ROOT, SECRET, need

JS = ROOT / "clients" / "js"
USER_LIMIT = 3


@pytest.mark.hub_settings(job_step_seconds=0.05)
def test_javascript_client(hub_process, worker, settings, sync_redis):
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    need((JS / "node_modules" / "eventsource").is_dir(), "run `npm ci --prefix clients/js` first (tox does)")
    hub = hub_process(HUB_MAX_CONNECTIONS_PER_USER=str(USER_LIMIT))
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
    )
    result = subprocess.run(
        [node, "--test", "--test-timeout=180000", "--test-reporter=spec", "test/"],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(result.stdout[-20000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
