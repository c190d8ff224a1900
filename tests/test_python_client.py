"""The Python client (hub_client) and `hub watch`, against a real hub process,
real workers and a real Redis: whole jobs over both transports, resuming
after a connection is cut mid-job (through a TCP proxy the test controls),
errors, and the command's output and exit codes."""

from __future__ import annotations

import json
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hub_client import HubClient, NotFound, Unauthorized
from hub_client.errors import ProtocolError
from hub_client.sse import Frame, LineSplitter, SSEParser

from hub.web.auth import issue_token
from hub.store.journal import Journal
from hub.store.keys import KeySpace
from hub.store.settings import Settings
from tests.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent
TRANSPORTS = ["sse", "longpoll"]
TERMINAL = ("completed", "failed")
#: The hub's reconnect hint in these tests: reconnects take a fraction of a second.
FAST_RETRY = {"HUB_SSE_RETRY_MS": "100"}


# Helpers ---------------------------------------------------------------------


def create_character(url: str, token: str, name: str = "Ada") -> str:
    request = urllib.request.Request(
        url + "/api/v1/characters",
        json.dumps({"name": name, "description": "curious and brave"}).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202
        return str(json.load(answer)["jobId"])


def wait_for(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    """A bounded wait on a condition (the blocking twin of conftest.eventually)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
    return result


def history(sync_redis: Any, settings: Settings, job_id: str) -> list[str]:
    """The ids of every event the job ever had, from its Redis stream."""
    return [i.decode() for i, _ in sync_redis.xrange(KeySpace(settings.namespace).job_events(job_id))]


def position(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def assert_a_proper_job_story(events: list[dict[str, Any]]) -> None:
    """Ids unique and increasing, progress never down, exactly one terminal
    event and it comes last."""
    assert events, "no events"
    positions = [position(e["id"]) for e in events]
    assert positions == sorted(set(positions)), "ids must be unique and increasing"
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress), "progress went down"
    assert [e["status"] in TERMINAL for e in events].count(True) == 1
    assert events[-1]["status"] in TERMINAL


class Consumer(threading.Thread):
    """Runs a watch in the background, so the test can act on the hub and
    the network while the client is connected."""

    DONE = object()

    def __init__(self, events: Iterator[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self._events = events
        self._queue: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            for event in self._events:
                self._queue.put(event)
        except BaseException as error:
            self.error = error
        finally:
            self._queue.put(self.DONE)

    def next(self, timeout: float = 15.0) -> dict[str, Any]:
        item = self._queue.get(timeout=timeout)
        if item is self.DONE:
            raise AssertionError(f"the watch ended early: {self.error!r}")
        return dict(item)

    def rest(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        items = []
        while (item := self._queue.get(timeout=timeout)) is not self.DONE:
            items.append(item)
        self.join(timeout)
        if self.error is not None:
            raise self.error
        return items


class Lines(threading.Thread):
    """A subprocess's output, line by line, with a timeout on each."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.start()

    def run(self) -> None:
        for line in self._stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next(self, timeout: float = 15.0) -> str | None:
        return self._queue.get(timeout=timeout)

    def rest(self, timeout: float = 30.0) -> list[str]:
        lines = []
        while (line := self.next(timeout)) is not None:
            lines.append(line)
        return lines


def command_env(token: str | None) -> dict[str, str]:
    # The client beside this checkout, not one installed from elsewhere.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")]))
    env.pop("HUB_URL", None)
    env.pop("HUB_TOKEN", None)
    if token is not None:
        env["HUB_TOKEN"] = token
    return env


def run_watch(*args: str, token: str | None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "watch", *args],
        env=command_env(token),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start_watch(*args: str, token: str, **popen: Any) -> subprocess.Popen[Any]:
    """`hub watch` running in the background; its output read as it comes."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen(
        [sys.executable, "-m", "hub", "watch", *args], env=command_env(token), stdin=subprocess.DEVNULL, **options
    )


def failed_job(sync_redis: Any, settings: Settings, job_id: str, owner: str = "alice") -> list[str]:
    journal = Journal(sync_redis, settings)
    journal.create(job_id, owner, "character")
    journal.update(job_id, owner, "character", status="active", progress=20, attempt=1, step="traits")
    journal.update(
        job_id,
        owner,
        "character",
        status="failed",
        failedReason="the model is down",
        result={"error": "the model is down"},
    )
    return history(sync_redis, settings, job_id)


def completed_job(sync_redis: Any, settings: Settings, job_id: str, owner: str = "alice") -> list[str]:
    journal = Journal(sync_redis, settings)
    journal.create(job_id, owner, "character")
    journal.update(job_id, owner, "character", status="active", progress=50, attempt=1)
    journal.update(job_id, owner, "character", status="completed", progress=100, result={"ok": True})
    return history(sync_redis, settings, job_id)


# The SSE parser on its own -------------------------------------------------------


def test_parser_handles_every_line_ending_split_anywhere() -> None:
    stream = b'retry: 250\r\n\r\n: keepalive\r\rid: 1-0\rdata: {"a":\r\ndata: 1}\n\nid: 2-0\ndata: {}\r\n\r\n'
    for size in (1, 2, 3, 7, len(stream)):
        parser = SSEParser()
        frames: list[Frame] = []
        for start in range(0, len(stream), size):
            frames += parser.feed(stream[start : start + size])
        assert frames == [Frame('{"a":\n1}', "1-0"), Frame("{}", "2-0")], size
        assert parser.retry_ms == 250


def test_parser_follows_the_field_rules() -> None:
    parser = SSEParser()
    frames = parser.feed(b"\xef\xbb\xbfdata\n\ndata:no space\nid: x\0y\nretry: soon\nevent: other\n\n")
    # "data" with no colon is an empty data line; an id with NUL is ignored;
    # a retry that is not all digits is ignored.
    assert frames == [Frame(""), Frame("no space", None, "other")]
    assert parser.retry_ms is None


def test_reading_is_bounded() -> None:
    with pytest.raises(ProtocolError):
        LineSplitter(max_line_bytes=100).feed(b"data: " + b"x" * 200)
    parser = SSEParser(max_line_bytes=100, max_frame_chars=150)
    with pytest.raises(ProtocolError):
        parser.feed(b"data: " + b"x" * 90 + b"\ndata: " + b"y" * 90 + b"\n")


# Whole jobs --------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_follows_a_whole_character_job(hub_process, worker, token, settings, sync_redis, transport):
    hub = hub_process()
    alice = token("alice")
    job_id = create_character(hub.url, alice, "Lin")
    watch = HubClient(hub.url, alice).watch(job_id, "character", transport=transport)
    # No worker yet: the job cannot have moved before the watch began.
    first = next(watch)
    assert first["type"] == "initial_status" and first["status"] == "queued"
    worker()
    events = [first, *watch]

    assert_a_proper_job_story(events)
    assert all(e["type"] == "job_update" for e in events[1:])
    assert events[-1]["status"] == "completed" and events[-1]["result"]["name"] == "Lin"
    # Nothing missed: the events after the first are the job's history after it.
    ids = history(sync_redis, settings, job_id)
    assert [e["id"] for e in events] == ids[ids.index(first["id"]) :]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_watch_my_follows_jobs_created_later(hub_process, worker, token, transport):
    hub = hub_process()
    worker()
    alice = token("alice")
    watch = HubClient(hub.url, alice).watch_my(transport=transport)
    first_job = create_character(hub.url, alice, "One")
    seen: list[dict[str, Any]] = []
    for event in watch:
        seen.append(event)
        if event.get("jobId") == first_job and event.get("status") == "completed":
            break
    assert {e["jobId"] for e in seen} == {first_job}
    assert_a_proper_job_story([e for e in seen if e["jobId"] == first_job])


# Resuming after a drop -------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_resumes_after_the_connection_is_cut_mid_job(hub_process, token, settings, sync_redis, transport):
    hub = hub_process(**FAST_RETRY)
    journal = Journal(sync_redis, settings)
    job_id = f"cut-{transport}"
    journal.create(job_id, "alice", "character")
    with TcpProxy(hub.port) as proxy:
        client = HubClient(proxy.url, token("alice"), retry_delay=0.1)
        consumer = Consumer(client.watch(job_id, "character", transport=transport, last_event_id="0-0"))
        events = [consumer.next()]
        journal.update(job_id, "alice", "character", status="active", progress=0, attempt=1)
        events.append(consumer.next())
        # The client is connected now: streaming, or holding a poll.
        wait_for(lambda: hub.metric("hub_connections", transport=transport) == 1)

        assert proxy.cut(hold=True) == 1
        # The client is disconnected until release(): these happen meanwhile.
        for progress in (20, 40):
            journal.update(job_id, "alice", "character", progress=progress, step=f"step{progress}")
        proxy.release()
        journal.update(job_id, "alice", "character", progress=60, step="step60")
        journal.update(job_id, "alice", "character", status="completed", progress=100, result={"ok": True})
        events += consumer.rest()
        assert proxy.accepted >= 2, "the client must have reconnected"

    # The whole history, from the very beginning: no gap, no duplicate.
    assert [e["id"] for e in events] == history(sync_redis, settings, job_id)
    assert [e["progress"] for e in events] == [0, 0, 20, 40, 60, 100]
    assert_a_proper_job_story(events)


def test_a_silent_connection_is_noticed_but_an_idle_one_is_not(hub_process, token, settings, sync_redis):
    hub = hub_process(HUB_KEEPALIVE_SECONDS="0.2", **FAST_RETRY)
    journal = Journal(sync_redis, settings)
    journal.create("quiet", "alice", "character")
    with TcpProxy(hub.port) as proxy:
        client = HubClient(proxy.url, token("alice"), timeout=1.0, retry_delay=0.1)
        consumer = Consumer(client.watch("quiet", "character", last_event_id="0-0"))
        assert consumer.next()["status"] == "queued"
        # Idle for several timeouts' worth of keepalives: still one connection.
        wait_for(lambda: hub.metric("hub_keepalives_sent_total") >= 8)
        assert proxy.accepted == 1

        # Now the connection goes silent without closing, like a dead peer.
        assert proxy.stall() == 1
        wait_for(lambda: proxy.accepted == 2)
        wait_for(lambda: hub.metric("hub_connections", transport="sse") == 1)
        journal.update("quiet", "alice", "character", status="completed", progress=100, result={})
        events = consumer.rest()
    assert [e["id"] for e in events] == history(sync_redis, settings, "quiet")[1:]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_reset_is_passed_on_and_the_fresh_state_is_not_skipped(hub_process, token, settings, sync_redis, transport):
    # A cursor from the future (as after Redis lost its data): the hub says
    # `reset` and sends the current state, whose id is older than the cursor.
    hub = hub_process()
    journal = Journal(sync_redis, settings)
    journal.create("lost", "alice", "character")
    journal.update("lost", "alice", "character", status="active", progress=30, attempt=1)
    client = HubClient(hub.url, token("alice"))
    consumer = Consumer(client.watch("lost", "character", transport=transport, last_event_id="99999999999999-0"))
    assert consumer.next()["type"] == "reset"
    fresh = consumer.next()
    assert fresh["type"] == "initial_status" and fresh["progress"] == 30
    wait_for(lambda: hub.metric("hub_connections", transport=transport) == 1)
    journal.update("lost", "alice", "character", status="completed", progress=100, result={})
    assert [e["status"] for e in consumer.rest()] == ["completed"]


def test_the_connection_limit_is_retried_after_retry_after(hub_process, token, settings, sync_redis):
    from hub.delivery.connections import RETRY_AFTER_SECONDS

    hub = hub_process(HUB_MAX_CONNECTIONS_PER_USER="1")
    completed_job(sync_redis, settings, "limited")
    client = HubClient(hub.url, token("alice"))
    holder = client.watch_my(include_connected=True)
    assert next(holder)["type"] == "connected"  # alice's only slot is taken

    waiting = Consumer(client.watch("limited", "character"))
    wait_for(lambda: hub.metric("hub_connections_rejected_total", reason="user_limit") >= 1)
    refused_at = time.monotonic()
    holder.close()  # frees the slot; the client must still wait for Retry-After
    events = waiting.rest()
    assert [e["status"] for e in events] == ["completed"]
    assert time.monotonic() - refused_at >= RETRY_AFTER_SECONDS - 0.5
    assert hub.metric("hub_connections_rejected_total", reason="user_limit") == 1


# Errors and the end of a job --------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_bad_token_raises_unauthorized(hub_process, transport):
    hub = hub_process()
    bad = issue_token(Settings(jwt_secret="another-secret-that-is-long-enough-too"), "alice", 600)
    with pytest.raises(Unauthorized) as raised:
        next(HubClient(hub.url, bad).watch("any", "character", transport=transport))
    assert raised.value.status == 401
    assert raised.value.body["error"] == "unauthorized"
    assert bad not in str(raised.value) and bad not in repr(HubClient(hub.url, bad))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_another_users_job_raises_not_found(hub_process, token, settings, sync_redis, transport):
    hub = hub_process()
    Journal(sync_redis, settings).create("bobs", "bob", "character")
    client = HubClient(hub.url, token("alice"))
    with pytest.raises(NotFound) as raised:
        next(client.watch("bobs", "character", transport=transport))
    assert raised.value.status == 404 and raised.value.body == {"error": "not_found", "message": "no such job"}
    # The owner, asking for the wrong type, gets the same.
    with pytest.raises(NotFound):
        next(HubClient(hub.url, token("bob")).watch("bobs", "media", transport=transport))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_watch_from_the_terminal_event_ends_without_events(hub_process, token, settings, sync_redis, transport):
    hub = hub_process()
    ids = completed_job(sync_redis, settings, "done")
    client = HubClient(hub.url, token("alice"))
    assert list(client.watch("done", "character", transport=transport, last_event_id=ids[-1])) == []
    # From just before it: exactly the terminal event.
    rest = list(client.watch("done", "character", transport=transport, last_event_id=ids[-2]))
    assert [e["id"] for e in rest] == ids[-1:]


def test_bad_arguments_fail_at_the_call():
    # Nothing listens on port 9: a request made by mistake would not raise ValueError.
    client = HubClient("http://127.0.0.1:9", "t")
    for not_a_type_name in ("Video", "9lives", "a" * 33, "", "media/x"):
        with pytest.raises(ValueError):
            client.watch("job", not_a_type_name)
        with pytest.raises(ValueError):
            client.create_job(not_a_type_name)
    with pytest.raises(ValueError):
        client.watch("", "video")
    with pytest.raises(ValueError):
        client.watch("job", "character", transport="websocket")
    with pytest.raises(ValueError):
        HubClient("ftp://example.com", "t")


# `hub watch` --------------------------------------------------------------------------

LINE = re.compile(r"\A(queued|active|completed) (\d{1,3})%( \w+)?\Z")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hub_watch_prints_a_line_per_event_and_the_result(hub_process, worker, token, transport):
    hub = hub_process()
    alice = token("alice")
    job_id = create_character(hub.url, alice, "Mo")
    process = start_watch(
        "--type", "character", job_id, "--url", hub.url, "--transport", transport, token=alice, stderr=subprocess.PIPE
    )
    try:
        lines = Lines(process.stdout)
        # Lines come out as events arrive, not when the command ends.
        assert lines.next() == "queued 0%"
        worker()
        rest = lines.rest()
        assert process.wait(30) == 0
    finally:
        process.kill()
        process.wait()
    progress_lines, result = rest[:-1], json.loads(rest[-1])
    matches = [LINE.match(line) for line in progress_lines]
    assert all(matches), progress_lines
    percents = [int(m.group(2)) for m in matches if m]
    assert percents == sorted(percents) and progress_lines[-1] == "completed 100%"
    assert result["name"] == "Mo" and len(result["traits"]) == 3
    assert alice not in process.stderr.read()


def test_hub_watch_exits_1_on_a_failed_job(hub_process, token, settings, sync_redis):
    hub = hub_process()
    failed_job(sync_redis, settings, "broken")
    done = run_watch("--type", "character", "broken", "--url", hub.url, token=token("alice"))
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["failed 20% the model is down"]
    assert "the model is down" in done.stderr


def test_hub_watch_exits_2_on_auth_and_usage_errors(hub_process, token, settings, sync_redis):
    hub = hub_process()
    completed_job(sync_redis, settings, "bobs", owner="bob")
    bad = issue_token(Settings(jwt_secret="another-secret-that-is-long-enough-too"), "alice", 600)

    refused = run_watch("--type", "character", "bobs", "--url", hub.url, token=bad)
    assert refused.returncode == 2 and refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1 and "401" in refused.stderr
    assert bad not in refused.stderr

    missing = run_watch("--type", "character", "bobs", "--url", hub.url, token=token("alice"))
    assert missing.returncode == 2 and "404" in missing.stderr and len(missing.stderr.splitlines()) == 1

    no_token = run_watch("--type", "character", "bobs", "--url", hub.url, token=None)
    assert no_token.returncode == 2 and "HUB_TOKEN" in no_token.stderr

    assert run_watch("--type", "video", "bobs", "--url", hub.url, token=token("bob")).returncode == 2

    # The URL may come from the environment too.
    owner = subprocess.run(
        [sys.executable, "-m", "hub", "watch", "--type", "character", "bobs"],
        env=dict(command_env(token("bob")), HUB_URL=hub.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert owner.returncode == 0, owner.stderr
    assert owner.stdout.splitlines() == ["completed 100%", '{"ok": true}']


def test_hub_watch_resumes_after_a_drop(hub_process, token, settings, sync_redis):
    hub = hub_process(**FAST_RETRY)
    journal = Journal(sync_redis, settings)
    journal.create("cli-cut", "alice", "character")
    with TcpProxy(hub.port) as proxy:
        process = start_watch("--type", "character", "cli-cut", "--url", proxy.url, token=token("alice"))
        try:
            lines = Lines(process.stdout)
            assert lines.next() == "queued 0%"
            journal.update("cli-cut", "alice", "character", status="active", progress=20, attempt=1, step="traits")
            assert lines.next() == "active 20% traits"

            assert proxy.cut(hold=True) == 1
            journal.update("cli-cut", "alice", "character", progress=40, step="stats")
            journal.update("cli-cut", "alice", "character", progress=60, step="backstory")
            proxy.release()
            journal.update("cli-cut", "alice", "character", status="completed", progress=100, result={"name": "X"})
            assert lines.rest() == ["active 40% stats", "active 60% backstory", "completed 100%", '{"name": "X"}']
            assert process.wait(30) == 0
        finally:
            process.kill()
            process.wait()
        assert proxy.accepted >= 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a pseudo-terminal")
def test_hub_watch_on_a_terminal_draws_one_progress_line(hub_process, token, settings, sync_redis):
    import pty

    hub = hub_process()
    completed_job(sync_redis, settings, "tty")
    leader, follower = pty.openpty()
    watched = ("--type", "character", "tty", "--url", hub.url)
    process = start_watch(*watched, token=token("alice"), stdout=follower, stderr=follower, text=False)
    os.close(follower)
    output = b""
    try:
        while select.select([leader], [], [], 30)[0]:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(30) == 0
    finally:
        os.close(leader)
        process.kill()
        process.wait()
    text = output.decode()
    assert text.startswith("\r[") and "100% completed" in text
    assert "completed in " in text and '"ok": true' in text
    assert "\n" not in text.split("completed in ")[0].rstrip("\r\n"), "progress is redrawn on one line"
