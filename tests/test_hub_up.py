"""`hub up` as a newcomer runs it: everything starts, the printed token
works, a job is followed to the end, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hub.runtime.embedded import free_port
from tests.conftest import need

STARTUP_TIMEOUT = 60.0


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


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_hub_up_runs_everything_and_stops_cleanly(tmp_path, stop_signal):
    try:
        from hub.runtime.embedded import server_binary

        server_binary()
    except Exception as exc:
        need(False, f"no embedded Redis server: {exc}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_PORT=str(port), HUB_JOB_STEP_SECONDS="0.05", PYTHONUNBUFFERED="1")
    log_path = tmp_path / "hub-up.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hub", "up"], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        token = None
        while token is None:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            found = re.search(r"export HUB_TOKEN=(\S+)", log_path.read_text())
            token = found.group(1) if found else None
            time.sleep(0.05)
        output = log_path.read_text()
        assert f"http://127.0.0.1:{port}/" in output
        family = descendants(process.pid)
        assert len(family) >= 3, "Redis, web server and worker run as children"

        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        create = urllib.request.Request(
            base + "/api/v1/characters", data=json.dumps({"name": "Newcomer"}).encode(), headers=headers
        )
        with urllib.request.urlopen(create, timeout=10) as answer:
            job = json.load(answer)
        assert answer.status == 202
        stream = urllib.request.Request(base + job["links"]["sse"], headers=headers)
        with urllib.request.urlopen(stream, timeout=30) as answer:
            text = answer.read().decode()  # the stream ends after the terminal event
        statuses = [json.loads(line[6:])["status"] for line in text.splitlines() if '"status"' in line]
        assert statuses[-1] == "completed" and "active" in statuses

        process.send_signal(stop_signal)
        assert process.wait(30) == 0
        assert not [pid for pid in family if alive(pid)], "no orphan is left behind"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
