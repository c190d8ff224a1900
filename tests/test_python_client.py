"""The Python client (hub_client) and `hub watch`, against a real hub process,
real workers and a real Redis: whole jobs over both transports, resuming
after a connection is cut mid-job (through a TCP proxy the test controls),
errors, and the command's output and exit codes; the service API: creating,
reading and listing jobs, publishing an external job's progress (run_job),
and what retries do when answers are lost or the hub is busy."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from hub_client import (
    BadRequest,
    Forbidden,
    HubClient,
    JobFinished,
    NotExternal,
    NotFound,
    OutcomeUnknown,
    RetriesExhausted,
    Unauthorized,
)
from hub_client.errors import ProtocolError
from hub_client.sse import Frame, LineSplitter, SSEParser

from hub.store.journal import Journal
from hub.store.settings import Settings
from hub.web.auth import issue_token
from tests.support.jobs import assert_a_proper_job_story, history
from tests.support.tcp_proxy import TcpProxy
from tests.support.tokens import issue_service_token
from tests.support.waiting import wait_for
from tests.support.watching import Consumer, Lines, command_env, run_watch, start_watch

TRANSPORTS = ["sse", "longpoll"]
#: The hub's reconnect hint in these tests: reconnects take a fraction of a second.
FAST_RETRY = {"HUB_SSE_RETRY_MS": "100"}
#: The job type whose progress the tests publish themselves.
EXTERNAL = {"HUB_EXTERNAL_JOB_TYPES": "import"}


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
    # An update the hub would refuse is refused before any request.
    for wrong in (
        {"status": "queued"},
        {"status": "active", "progress": 101},
        {"status": "active", "progress": True},
        {"status": "active", "result": {"too": "early"}},
        {"status": "completed", "failed_reason": "not failed"},
    ):
        with pytest.raises(ValueError):
            client.publish("job", **wrong)
    with pytest.raises(TypeError):
        client.publish("job", "completed", result=["not", "an", "object"])  # type: ignore[arg-type]
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

    # Any type's name is taken; the hub knows no "video" type, so no such job.
    unknown = run_watch("--type", "video", "bobs", "--url", hub.url, token=token("bob"))
    assert unknown.returncode == 2 and "404" in unknown.stderr
    not_a_name = run_watch("--type", "Video!", "bobs", "--url", hub.url, token=token("bob"))
    assert not_a_name.returncode == 2 and "not a job type's name" in not_a_name.stderr

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


# The service API ------------------------------------------------------------------------


@pytest.fixture
def service(settings: Settings) -> Callable[..., HubClient]:
    """A client with a service's token, for `url` (the hub, or a proxy to it)."""

    def make(url: str, **options: Any) -> HubClient:
        return HubClient(url, issue_service_token(settings), **options)

    return make


def job_events(client: HubClient, job_id: str, job_type: str = "import") -> list[dict[str, Any]]:
    """Every event of a finished job, as its owner's watch gives them."""
    return list(client.watch(job_id, job_type, last_event_id="0-0"))


def statuses(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(e["status"], e["progress"]) for e in events]


class FaultyGateway:
    """A proxy in front of the hub whose next connections misbehave as
    planned, one plan entry per connection, then forward faithfully:

    - "busy": answers the request 503 with `Retry-After: 0` and closes;
    - "lose answer": passes the request on, waits for the hub's answer (the
      hub has acted), then resets the connection instead of passing it back;
    - a callable: reads the request, calls it (the world changes meanwhile),
      then resets the connection without passing the request on.
    """

    def __init__(self, target_port: int, plan: list[Any]) -> None:
        self._target = ("127.0.0.1", target_port)
        self._plan = list(plan)
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> FaultyGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._sockets.append(client)
            action = self._plan.pop(0) if self._plan else "forward"
            threading.Thread(target=self._handle, args=(client, action), daemon=True).start()

    def _handle(self, client: socket.socket, action: Any) -> None:
        with contextlib.suppress(OSError):
            if action == "forward":
                self._forward(client)
                return
            request = read_request(client)
            if action == "busy":
                body = b'{"error":"server_busy"}'
                client.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
                client.close()
                return
            if action == "lose answer":
                with socket.create_connection(self._target) as upstream:
                    upstream.sendall(request)
                    assert upstream.recv(65536), "the hub did not answer"
            else:
                action()
            reset(client)

    def _forward(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self._target)
        self._sockets.append(upstream)

        def pump(source: socket.socket, sink: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    sink.sendall(data)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)


def read_request(sock: socket.socket) -> bytes:
    """One whole HTTP request (head and Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the client closed before sending a request"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)):
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def reset(sock: socket.socket) -> None:
    """Closes with a TCP reset, as a broken connection ends."""
    import struct

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.hub_settings(external_job_types=("import",))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_service_runs_a_users_external_job_while_the_user_watches(hub_process, token, service, transport):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    created = billing.create_job("import", {"file": "a.csv"}, owner="alice")
    assert created["type"] == "import" and created["status"] == "queued"
    job_id = created["jobId"]
    alice = HubClient(hub.url, token("alice"))
    watch = alice.watch(job_id, "import", transport=transport)
    assert next(watch)["status"] == "queued"

    with billing.run_job(job_id, step="reading") as job:
        assert job.status == "active" and not job.finished
        job.progress(50, step="half")
        job.progress(74.9)  # rounded down: never ahead of the work
        job.result = {"rows": 3}
    assert job.finished and job.status == "completed"

    events = list(watch)
    assert statuses(events) == [("active", 0), ("active", 50), ("active", 74), ("completed", 100)]
    assert [e.get("step") for e in events[:2]] == ["reading", "half"]
    assert events[-1]["result"] == {"rows": 3}
    for reader in (alice, billing):
        stored = reader.get_job(job_id)
        assert stored["status"] == "completed" and stored["result"] == {"rows": 3}


@pytest.mark.hub_settings(external_job_types=("import",))
def test_a_block_that_raises_fails_the_job_once_and_the_exception_goes_on(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    job_id = billing.create_job("import", owner="alice")["jobId"]
    message = "the disk is full " + "x" * 1000

    with pytest.raises(OSError, match="the disk is full") as raised, billing.run_job(job_id) as job:
        job.progress(30, step="copy")
        raise OSError(message)
    assert not getattr(raised.value, "__notes__", None), "the failure was published"

    events = job_events(HubClient(hub.url, token("alice")), job_id)
    assert statuses(events)[1:] == [("active", 0), ("active", 30), ("failed", 30)]
    reason = events[-1]["failedReason"]
    assert reason == f"OSError: {message}"[:500] and len(reason) == 500
    assert events[-1]["result"]["error"] == reason
    assert job.status == "failed"

    # Nothing more, whether from the finished RunningJob (refused before any
    # request) or straight to the hub (409).
    with pytest.raises(JobFinished) as local:
        job.progress(40)
    assert local.value.status is None and "already failed" in str(local.value)
    with pytest.raises(JobFinished) as remote:
        billing.publish(job_id, "completed", result={})
    assert remote.value.status == 409 and remote.value.code == "job_finished"
    assert len(job_events(HubClient(hub.url, token("alice")), job_id)) == len(events)


@pytest.mark.hub_settings(external_job_types=("import",))
def test_fail_ends_the_job_without_raising_and_nothing_follows(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    alice = HubClient(hub.url, token("alice"))
    quiet, loud = (billing.create_job("import", owner="alice")["jobId"] for _ in range(2))

    with billing.run_job(quiet) as job:
        job.fail("the file has no header row")
        went_on = True
    assert went_on and job.status == "failed"
    assert statuses(job_events(alice, quiet))[-1:] == [("failed", 0)]
    assert job_events(alice, quiet)[-1]["failedReason"] == "the file has no header row"

    # A block that fails its job and then raises: still one terminal event.
    with pytest.raises(ValueError), billing.run_job(loud) as job:
        job.fail("first reason")
        raise ValueError("second reason")
    failed = [e for e in job_events(alice, loud) if e["status"] == "failed"]
    assert [e["failedReason"] for e in failed] == ["first reason"]


@pytest.mark.hub_settings(external_job_types=("import",))
def test_a_result_that_is_not_an_object_fails_the_job_in_the_block(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    job_id = billing.create_job("import", owner="alice")["jobId"]
    with pytest.raises(TypeError), billing.run_job(job_id) as job:
        job.result = [1, 2, 3]  # type: ignore[assignment]
    events = job_events(HubClient(hub.url, token("alice")), job_id)
    assert events[-1]["status"] == "failed" and events[-1]["failedReason"].startswith("TypeError: ")


@pytest.mark.hub_settings(external_job_types=("import",))
def test_only_a_service_may_publish_and_only_for_external_jobs(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    alice = HubClient(hub.url, token("alice"))
    # The app's backend creates external jobs, not the user.
    with pytest.raises(Forbidden):
        alice.create_job("import")
    job_id = service(hub.url).create_job("import", owner="alice")["jobId"]

    # A user's token: refused, and nothing was published.
    with pytest.raises(Forbidden) as raised:
        alice.publish(job_id, "active", progress=10)
    assert raised.value.status == 403 and raised.value.code == "forbidden"
    with pytest.raises(Forbidden), alice.run_job(job_id):
        pytest.fail("the block must not run when `active` was refused")
    assert alice.get_job(job_id)["status"] == "queued"

    # A job of a type the hub's own workers run (no worker here: it stays queued).
    actor_job = alice.create_job("character", {"name": "Ada"})["jobId"]
    with pytest.raises(NotExternal) as refused:
        service(hub.url).publish(actor_job, "active", progress=10)
    assert refused.value.status == 409 and refused.value.code == "not_external"
    with pytest.raises(NotFound):
        service(hub.url).publish("no-such-job", "active")


@pytest.mark.hub_settings(external_job_types=("import",))
def test_jobs_are_read_by_their_owner_and_services_only(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    alice = HubClient(hub.url, token("alice"))
    job_id = service(hub.url).create_job("import", {"file": "b.csv"}, owner="alice")["jobId"]
    job = alice.get_job(job_id)
    assert job["jobId"] == job_id and job["type"] == "import" and job["status"] == "queued"
    assert job["progress"] == 0 and job["createdAt"]
    assert service(hub.url).get_job(job_id)["jobId"] == job_id
    with pytest.raises(NotFound):
        HubClient(hub.url, token("bob")).get_job(job_id)
    with pytest.raises(NotFound):
        alice.get_job("no-such-job")


@pytest.mark.hub_settings(external_job_types=("import",))
def test_list_jobs_pages_newest_first_and_iter_jobs_reads_them_all(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    alice = HubClient(hub.url, token("alice"))
    billing = service(hub.url)
    created = [billing.create_job("import", {"n": n}, owner="alice")["jobId"] for n in range(5)]
    with billing.run_job(created[1]) as job:
        job.result = {"finished": "and still listed"}
    newest_first = created[::-1]

    pages = []
    jobs, after = alice.list_jobs(limit=2)
    pages.append([j["jobId"] for j in jobs])
    while after is not None:
        jobs, after = alice.list_jobs(limit=2, before=after)
        pages.append([j["jobId"] for j in jobs])
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    assert [j["jobId"] for j in alice.iter_jobs(page_size=2)] == newest_first
    assert {j["jobId"]: j["status"] for j in alice.iter_jobs()}[created[1]] == "completed"
    assert HubClient(hub.url, token("bob")).list_jobs() == ([], None)
    with pytest.raises(ValueError):
        alice.list_jobs(limit=0)
    with pytest.raises(BadRequest):
        alice.list_jobs(limit=2, before="not a cursor")


@pytest.mark.hub_settings(external_job_types=("import",))
def test_job_types_and_what_creating_a_job_refuses(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    alice = HubClient(hub.url, token("alice"))
    types = {t["type"]: t for t in alice.job_types()}
    assert types["import"]["runner"] == "external" and types["import"]["create"] == "/api/v1/jobs"
    assert types["character"]["runner"] == "actor"
    assert types["character"]["input"]["properties"]["name"]["type"] == "string"

    with pytest.raises(BadRequest) as unknown:
        alice.create_job("no-such-type")
    assert unknown.value.code == "bad_request"
    with pytest.raises(BadRequest):
        alice.create_job("character", {"name": 42})
    with pytest.raises(Forbidden):
        alice.create_job("import", owner="bob")
    with pytest.raises(BadRequest):
        service(hub.url).create_job("import")  # whose job?
    assert alice.list_jobs() == ([], None)


# Retries: lost answers, a busy hub ------------------------------------------------------


@pytest.mark.hub_settings(external_job_types=("import",))
def test_a_terminal_update_whose_answer_was_lost_counts_once(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    job_id = billing.create_job("import", owner="alice")["jobId"]
    billing.publish(job_id, "active", progress=50)
    with FaultyGateway(hub.port, ["lose answer"]) as gateway:
        through = service(gateway.url, retry_delay=0.05)
        assert through.publish(job_id, "completed", result={"rows": (1, 2)}) is None
        assert gateway.accepted == 2
    events = job_events(HubClient(hub.url, token("alice")), job_id)
    assert statuses(events)[1:] == [("active", 50), ("completed", 100)]
    assert events[-1]["result"] == {"rows": [1, 2]}


@pytest.mark.hub_settings(external_job_types=("import",))
def test_a_lost_terminal_update_after_someone_else_ended_the_job_raises(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    job_id = billing.create_job("import", owner="alice")["jobId"]
    billing.publish(job_id, "active")

    def another_worker_finishes_first() -> None:
        billing.publish(job_id, "completed", result={"by": "the other worker"})

    with FaultyGateway(hub.port, [another_worker_finishes_first]) as gateway:
        with pytest.raises(JobFinished):
            service(gateway.url, retry_delay=0.05).publish(job_id, "completed", result={"by": "me"})
        assert gateway.accepted == 2
    events = job_events(HubClient(hub.url, token("alice")), job_id)
    assert [e["result"] for e in events if e["status"] == "completed"] == [{"by": "the other worker"}]


@pytest.mark.hub_settings(external_job_types=("import",))
def test_a_progress_update_whose_answer_was_lost_is_sent_again(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    job_id = billing.create_job("import", owner="alice")["jobId"]
    with FaultyGateway(hub.port, ["lose answer"]) as gateway:
        cursor = service(gateway.url, retry_delay=0.05).publish(job_id, "active", progress=40, step="copy")
    billing.publish(job_id, "completed")
    events = job_events(HubClient(hub.url, token("alice")), job_id)
    # As documented: the same values twice, never a different state.
    assert statuses(events)[1:] == [("active", 40), ("active", 40), ("completed", 100)]
    assert cursor == events[2]["id"]


@pytest.mark.hub_settings(external_job_types=("import",))
def test_a_busy_hub_is_tried_again_and_the_retries_are_bounded(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    job_id = billing.create_job("import", owner="alice")["jobId"]
    with FaultyGateway(hub.port, ["busy", "busy"]) as gateway:
        assert service(gateway.url, retry_delay=0.05).publish(job_id, "active", progress=10)
        assert gateway.accepted == 3
    with FaultyGateway(hub.port, ["busy"] * 10) as gateway:
        with pytest.raises(RetriesExhausted) as raised:
            service(gateway.url, retry_delay=0.05, request_retries=2).publish(job_id, "active", progress=20)
        assert gateway.accepted == 3
    assert raised.value.status == 503
    assert billing.get_job(job_id)["progress"] == 10


@pytest.mark.hub_settings(external_job_types=("import",))
def test_creating_a_job_is_never_sent_twice(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    alice = HubClient(hub.url, token("alice"))
    with FaultyGateway(hub.port, ["lose answer"]) as gateway:
        with pytest.raises(OutcomeUnknown):
            service(gateway.url, retry_delay=0.05).create_job("import", owner="alice")
        assert gateway.accepted == 1
    # The hub did create it: the caller can find it before trying again.
    assert len(alice.list_jobs()[0]) == 1
    with FaultyGateway(hub.port, ["busy"]) as gateway:
        # A 503 comes before anything is created: that one is retried.
        service(gateway.url, retry_delay=0.05).create_job("import", owner="alice")
        assert gateway.accepted == 2
    assert len(alice.list_jobs()[0]) == 2


@pytest.mark.hub_settings(external_job_types=("import",))
def test_hub_watch_follows_a_job_of_any_registered_type(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    job_id = billing.create_job("import", owner="alice")["jobId"]
    with billing.run_job(job_id, step="reading") as job:
        job.result = {"rows": 7}
    done = run_watch("--type", "import", job_id, "--url", hub.url, token=token("alice"))
    assert done.returncode == 0, done.stderr
    # The job's state now: completed, with the last step it reported.
    assert done.stdout.splitlines() == ["completed 100% reading", '{"rows": 7}']


@pytest.mark.hub_settings(external_job_types=("import",))
def test_a_service_token_reads_no_users_streams_or_lists(hub_process, service):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    job_id = billing.create_job("import", owner="alice")["jobId"]
    for transport in TRANSPORTS:
        with pytest.raises(Forbidden):
            next(billing.watch(job_id, "import", transport=transport))
    with pytest.raises(Forbidden):
        billing.list_jobs()
    # What a service may read: the job, with its owner and input.
    job = billing.get_job(job_id)
    assert job["owner"] == "alice" and job["input"] == {}


@pytest.mark.hub_settings(external_job_types=("import",))
def test_a_connection_the_hub_closed_while_idle_is_replaced_at_once(hub_process, token, service):
    # The hub closes a connection idle for this long (a proxy might sooner).
    hub = hub_process(HUB_REQUEST_TIMEOUT_SECONDS="2", **EXTERNAL)
    job_id = service(hub.url).create_job("import", owner="alice")["jobId"]
    with TcpProxy(hub.port) as proxy:
        # A backoff would take seconds: only an immediate reconnect is quick.
        publisher = service(proxy.url, retry_delay=10.0)
        publisher.publish(job_id, "active", progress=10)
        assert proxy.accepted == 1
        wait_for(lambda: proxy.open_connections == 0)  # the hub closed the idle connection
        started = time.monotonic()
        publisher.publish(job_id, "active", progress=20)
        assert time.monotonic() - started < 5.0
        publisher.publish(job_id, "active", progress=30)
        assert proxy.accepted == 2, "the new connection is kept for the next call"
    assert statuses(job_events_so_far(hub, token("alice"), job_id)) == [
        ("queued", 0),
        ("active", 10),
        ("active", 20),
        ("active", 30),
    ]


def job_events_so_far(hub: Any, user_token: str, job_id: str) -> list[dict[str, Any]]:
    """The events of a job that has not ended, from its long-poll."""
    request = urllib.request.Request(
        f"{hub.url}/api/v1/poll/jobs/import/{job_id}?cursor=0-0", headers={"Authorization": f"Bearer {user_token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return list(json.load(answer)["events"])


@pytest.mark.hub_settings(external_job_types=("import",))
def test_when_the_failure_cannot_be_published_the_blocks_exception_still_goes_on(hub_process, service):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    job_id = billing.create_job("import", owner="alice")["jobId"]
    with FaultyGateway(hub.port, ["forward", "busy", "busy", "busy"]) as gateway:
        through = service(gateway.url, retry_delay=0.05, request_retries=2)
        with pytest.raises(RuntimeError, match="the real problem") as raised, through.run_job(job_id) as job:
            job.progress(10)
            through.close()  # the next call needs a new connection: a busy one
            raise RuntimeError("the real problem")
        assert gateway.accepted == 4
    assert any("could not be published" in note for note in raised.value.__notes__)
    # The hub never heard of the failure: the job fails as stalled later.
    assert billing.get_job(job_id)["status"] == "active"


@pytest.mark.hub_settings(external_job_types=("import",))
def test_threads_racing_to_end_a_job_publish_one_terminal_event(hub_process, token, service):
    hub = hub_process(**EXTERNAL)
    billing = service(hub.url)
    job_id = billing.create_job("import", owner="alice")["jobId"]
    outcomes: list[str] = []

    def end(action: Callable[[], Any]) -> None:
        try:
            action()
            outcomes.append("published")
        except JobFinished as refused:
            assert refused.status is None, "refused by the RunningJob, before asking the hub"
            outcomes.append("refused")

    with billing.run_job(job_id) as job:
        racers = [
            threading.Thread(target=end, args=(lambda: job.complete({"by": "one"}),)),
            threading.Thread(target=end, args=(lambda: job.fail("by two"),)),
            threading.Thread(target=end, args=(lambda: job.complete({"by": "three"}),)),
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(30)
    assert sorted(outcomes) == ["published", "refused", "refused"]
    events = job_events(HubClient(hub.url, token("alice")), job_id)
    assert [e["status"] for e in events].count("completed") + [e["status"] for e in events].count("failed") == 1
