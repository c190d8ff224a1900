"""A worker in another language: a Node script with plain `fetch` and a
service token creates an `external` job for alice and publishes its progress;
meanwhile the browser-side JavaScript client follows the job as alice,
through a connection that is cut mid-job, and resumes with Last-Event-ID.
It ends with every event exactly once, in order, and the job's result."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.environment import ROOT, need
from tests.support.tcp_proxy import TcpProxy
from tests.support.tokens import issue_service_token

NODE_DIR = ROOT / "tests" / "node"
JS = ROOT / "clients" / "js"
JOB_TYPE = "report"
#: Long enough for a loaded machine; every wait ends as soon as its line comes.
WAIT_SECONDS = 30.0


class NodeScript:
    """A Node script whose stdout is JSON lines, read by a thread into a queue
    so that a test can wait for a line with a deadline."""

    def __init__(self, node: str, script: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [node, str(NODE_DIR / script)],
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(json.loads(line))
        self._queue.put(None)

    def expect(self, wanted: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The next line that `wanted` accepts; the lines before it are kept in `lines`."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {what} within {WAIT_SECONDS}s; got {self.lines}") from None
            if line is None:
                raise AssertionError(f"the script ended before {what}: {self.lines} {self.stderr()}")
            self.lines.append(line)
            if wanted(line):
                return line

    def send(self, text: str = "go") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()[-4000:]

    def wait(self) -> int:
        return self.process.wait(WAIT_SECONDS)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT_SECONDS)


@pytest.fixture
def node_scripts() -> Iterator[Callable[[str, dict[str, str]], NodeScript]]:
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    assert node is not None
    started: list[NodeScript] = []

    def start(script: str, env: dict[str, str]) -> NodeScript:
        started.append(NodeScript(node, script, env))
        return started[-1]

    yield start
    for script in started:
        script.stop()


@pytest.mark.hub_settings(external_job_types=(JOB_TYPE,))
@pytest.mark.parametrize("transport", ["fetch", "eventsource"])
def test_node_worker_publishes_and_the_js_client_follows_across_a_cut(
    hub_process, settings, token, node_scripts, transport
):
    if transport == "eventsource":
        need((JS / "node_modules" / "eventsource").is_dir(), "run `npm ci --prefix clients/js` first (tox does)")
    hub = hub_process(HUB_EXTERNAL_JOB_TYPES=",".join(settings.external_job_types))

    # Given a worker of the app's own that has created a job for alice,
    worker = node_scripts(
        "external_worker.mjs",
        {
            "HUB_URL": hub.url,
            "HUB_SERVICE_TOKEN": issue_service_token(settings, "report-worker"),
            "JOB_TYPE": JOB_TYPE,
            "JOB_OWNER": "alice",
        },
    )
    job_id = worker.expect(lambda line: "jobId" in line or "error" in line, "job id")["jobId"]
    published: list[dict[str, Any]] = []

    def publish(count: int) -> None:
        for _ in range(count):
            worker.send()
            line = worker.expect(lambda line: "published" in line or "error" in line, "publish answer")
            assert "error" not in line, line
            published.append(line)

    with TcpProxy(hub.port) as proxy:
        # and alice's browser following it through a connection that will break,
        follower = node_scripts(
            "follow_job.mjs",
            {
                "HUB_URL": proxy.url,
                "HUB_TOKEN": token("alice"),
                "JOB_TYPE": JOB_TYPE,
                "JOB_ID": job_id,
                "TRANSPORT": transport,
            },
        )
        first = follower.expect(lambda line: line.get("event", {}).get("type") == "initial_status", "initial status")
        assert first["event"]["status"] == "queued"

        # when the worker starts and reports a step, the browser sees both;
        publish(2)
        follower.expect(lambda line: line.get("id") == published[-1]["id"], "the 20% step")

        # when the connection breaks and two steps are published meanwhile,
        assert proxy.cut(hold=True) >= 1
        publish(2)
        proxy.release()
        follower.expect(lambda line: line.get("id") == published[-1]["id"], "the steps published during the cut")

        # and the job goes on to its end,
        publish(2)
        final = follower.expect(lambda line: "final" in line or "error" in line, "the job's end")
        assert follower.wait() == 0, follower.stderr()

    # then the browser got every event once, in order, and the result.
    delivered = [line for line in follower.lines if line.get("id")]
    assert [line["id"] for line in delivered] == [first["id"]] + [line["id"] for line in published]
    updates = [line["event"] for line in delivered[1:]]
    assert [(e["status"], e.get("progress"), e.get("step")) for e in updates] == [
        (p["published"]["status"], p["published"]["progress"], p["published"].get("step")) for p in published
    ]
    assert final["final"]["status"] == "completed"
    assert final["final"]["result"] == published[-1]["published"]["result"]
    assert all(e["jobType"] == JOB_TYPE for e in updates if "jobType" in e)

    # It reconnected once, resuming after the last event it had before the cut.
    streams = [line for line in follower.lines if f"/sse/jobs/{JOB_TYPE}/" in line.get("request", "")]
    assert [line["lastEventId"] for line in streams] == [None, published[1]["id"]]
    if transport == "fetch":
        assert all("access_token" not in line["request"] for line in streams), "the token went in a header"

    # And the worker's late publish, after the end, was refused.
    after = worker.expect(lambda line: "afterEnd" in line, "the late publish")
    assert after["afterEnd"]["status"] == 409
    assert after["afterEnd"]["body"]["error"] == "job_finished"
    assert worker.wait() == 0
