"""A real nginx, configured by config/nginx.conf itself, in front of two
`hub serve` processes and a real worker: events stream through one by one,
uncompressed, held long-polls and idle streams are not cut, a client that
stops reading is not hidden from the hub, the hub logs the client's own
address, and a client moves between the processes mid-job without losing or
repeating an event.

The test copies the shipped config and changes only what its markers allow
(the upstream servers, the listen port and the access log's file, not its
format), plus the paths an unprivileged nginx needs (pid file, error log and
temp folders in the test's tmp_path).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from hub.runtime.embedded import free_port
from hub.store.events import parse_cursor
from hub.store.journal import Journal
from hub.store.keys import KeySpace
from hub.store.settings import DEFAULT_KEEPALIVE_SECONDS, DEFAULT_LONGPOLL_TIMEOUT_SECONDS
from tests.support.environment import ROOT, need
from tests.support.http import Api, Response, read_response, request
from tests.support.processes import HubProcess, wait_ready
from tests.support.sse import Frame
from tests.support.waiting import eventually

TEMPLATE = ROOT / "config" / "nginx.conf"
LONGPOLL_SECONDS = 3.0
KEEPALIVE_SECONDS = 1.0
HUB_ENV = {
    "HUB_LONGPOLL_TIMEOUT_SECONDS": str(LONGPOLL_SECONDS),
    "HUB_KEEPALIVE_SECONDS": str(KEEPALIVE_SECONDS),
    "HUB_TRUST_PROXY_HEADERS": "1",
    "HUB_LOG_LEVEL": "INFO",  # the access log (`hub.access`) logs at INFO
    # A client that stops reading is dropped soon (see the slow client test).
    "HUB_SUBSCRIBER_QUEUE": "50",
    "HUB_WRITE_TIMEOUT_SECONDS": "2",
}
#: Long enough that a character job (5 steps) is still running while a
#: client reads it, short enough to keep the tests quick.
WORKER_STEP_SECONDS = "0.25"
#: Also on loopback: a client connecting from here is told apart from nginx
#: itself, which reaches the hubs from 127.0.0.1.
CLIENT_ADDRESS = "127.0.0.2"
#: What a browser sends: a proxy that compresses streams would do it for these.
BROWSER_HEADERS = {"Accept-Encoding": "gzip, deflate, br"}


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def render_config(template: str, *, listen: str, upstreams: list[str], directory: Path) -> str:
    """config/nginx.conf with the marked lines replaced and the paths of an
    unprivileged test added; fails if the markers went missing."""
    out: list[str] = []
    upstream_marks = listen_marks = log_marks = http_blocks = 0
    for line in template.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        if line.rstrip().endswith("# hub-access-log"):
            log_marks += 1
            # Only the file changes: the test reads what the shipped format writes.
            _, _, format_name = line.split("#")[0].strip().rstrip(";").split(maxsplit=2)
            out.append(f'{indent}access_log "{directory / "access.log"}" {format_name};')
            continue
        if line.rstrip().endswith("# hub-upstream"):
            upstream_marks += 1
            if upstream_marks == 1:
                out += [f"{indent}server {address};" for address in upstreams]
            continue
        if line.rstrip().endswith("# hub-listen"):
            listen_marks += 1
            out.append(f"{indent}listen {listen};")
            continue
        out.append(line)
        if re.fullmatch(r"\s*http\s*\{\s*", line):
            http_blocks += 1
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                out.append(f'{indent}    {kind}_temp_path "{directory / (kind + "_temp")}";')
    assert upstream_marks >= 1, f"{TEMPLATE} has no '# hub-upstream' server line"
    assert listen_marks == 1, f"{TEMPLATE} needs exactly one '# hub-listen' line"
    assert log_marks == 1, f"{TEMPLATE} needs exactly one '# hub-access-log' line"
    assert http_blocks == 1, f"{TEMPLATE} needs one 'http {{' line"
    head = [
        "daemon off;",
        f'pid "{directory / "nginx.pid"}";',
        f'error_log "{directory / "error.log"}" warn;',
    ]
    if os.geteuid() == 0:
        # Otherwise nginx's workers become `nobody`, who cannot reach tmp_path.
        head.append("user root;")
    return "\n".join(head + out) + "\n"


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, name: str) -> str:
        path = self.directory / name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast shutdown: open streams do not hold it up
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            # Its own process group: the master and its workers, nothing else.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def nginx(hub_process: Any, tmp_path: Path) -> Iterator[Callable[[list[HubProcess]], Nginx]]:
    """Starts nginx in front of hub processes; stops it at teardown (before
    the hubs, whatever the test's outcome)."""
    binary = nginx_binary()
    need(binary is not None, "nginx is not installed")
    assert binary is not None
    started: list[Nginx] = []

    def start(hubs: list[HubProcess]) -> Nginx:
        directory = tmp_path / f"nginx{len(started)}"
        directory.mkdir()
        port = free_port()
        config = directory / "nginx.conf"
        config.write_text(
            render_config(
                TEMPLATE.read_text(),
                listen=f"127.0.0.1:{port}",
                upstreams=[f"127.0.0.1:{hub.port}" for hub in hubs],
                directory=directory,
            )
        )
        command = [binary, "-p", f"{directory}/", "-c", str(config), "-e", str(directory / "error.log")]
        with open(directory / "output.log", "ab") as sink:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        proxy = Nginx(process, port, directory)
        started.append(proxy)
        try:
            wait_ready(proxy.url + "/healthz", process)
        except AssertionError as error:
            raise AssertionError(f"nginx: {error}\n{proxy.log('output.log')}{proxy.log('error.log')}") from None
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@dataclass
class Stack:
    hubs: list[HubProcess]
    proxy: Nginx

    def sse_opened(self) -> list[float]:
        return [hub.metric("hub_connections_opened_total", transport="sse") for hub in self.hubs]

    def served_by(self, before: list[float]) -> int:
        """The hub that admitted the one stream opened since `before`."""
        grown = [i for i, (b, a) in enumerate(zip(before, self.sse_opened(), strict=True)) if a > b]
        assert len(grown) == 1, f"expected one hub to admit the stream: {before} -> {self.sse_opened()}"
        return grown[0]


@pytest.fixture
def stack(hub_process: Any, worker: Any, nginx: Any, tmp_path: Path) -> Stack:
    hubs = [hub_process(output=tmp_path / f"hub{i}.log", **HUB_ENV) for i in range(2)]
    worker(HUB_JOB_STEP_SECONDS=WORKER_STEP_SECONDS)
    return Stack(hubs, nginx(hubs))


def instant(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def summary(label: str, millis: list[float]) -> str:
    return f"{label}: p50 {statistics.median(millis):.2f} ms, max {max(millis):.2f} ms over {len(millis)} events"


async def open_stream(stack: Stack, client: Api, path: str) -> tuple[Response, int]:
    """Opens `path` through nginx; returns the stream and the hub serving it."""
    before = stack.sse_opened()
    stream = await client.get(path, BROWSER_HEADERS)
    assert stream.status == 200, stream.status
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in stream.headers, "a compressed stream holds events back"
    return stream, stack.served_by(before)


async def timed_frames(stream: Response) -> list[tuple[float, Frame]]:
    """Every frame with data until the stream ends, with its arrival time."""
    frames = []
    while (frame := await stream.frame()) is not None:
        if frame.data is not None:
            frames.append((time.time(), frame))
    return frames


@pytest.mark.gen_test(timeout=90)
async def test_a_real_jobs_events_come_through_nginx_as_they_happen(stack, token):
    client = Api(stack.proxy.url, token("alice"))

    readers = []
    for n in range(3):
        path = f"/api/v1/sse/jobs/character/{await client.create_character(name=f'Ada {n}')}"
        via_nginx, hub = await open_stream(stack, client, path)
        # Directly to the process that serves the nginx stream: the same
        # writes, one path through nginx and one without.
        direct = await Api(stack.hubs[hub].url, client.token).stream(path)
        assert direct.status == 200
        readers.append(asyncio.gather(timed_frames(via_nginx), timed_frames(direct)))
    followed = await asyncio.gather(*readers)

    added, published_to_nginx = [], []
    for via_nginx, direct in followed:
        assert via_nginx[-1][1].data["status"] == "completed"
        live = [(t, f) for t, f in via_nginx if f.type == "job_update"]
        assert len(live) >= 2, "the job finished before the stream opened"
        terminal_published = instant(live[-1][1].data["timestamp"])
        # Not held back until the stream ends: the first update is through
        # nginx before the job's last event even exists.
        assert live[0][0] < terminal_published, "nginx held the stream's events back"
        # Nothing lost or reordered: after the later of the two starts, both
        # connections carry the same events.
        start = max(
            parse_cursor(next(f.id for _, f in frames if f.type == "initial_status")) for frames in (via_nginx, direct)
        )
        ids_via_nginx = [f.id for _, f in live if parse_cursor(f.id) > start]
        direct_times = {f.id: t for t, f in direct if f.type == "job_update"}
        assert ids_via_nginx == [i for i in direct_times if parse_cursor(i) > start]
        for arrived, frame in live:
            published_to_nginx.append(1000 * (arrived - instant(frame.data["timestamp"])))
            if frame.id in direct_times:
                added.append(1000 * (arrived - direct_times[frame.id]))
    print()
    print(summary("real job, added by nginx (nginx arrival - direct arrival)", added))
    print(summary("real job, publish to arrival through nginx (ms timestamps)", published_to_nginx))


@pytest.mark.gen_test(timeout=60)
async def test_each_event_passes_nginx_before_the_next_is_published(stack, token, settings, sync_redis):
    """Lock-step: publish one event, wait (bounded) for it, then the next.
    Two jobs on the same hub process, one followed through nginx and one
    directly, measured in turn so that only one socket is ever awaited."""
    journal = Journal(sync_redis, settings)
    client = Api(stack.proxy.url, token("bob"))
    job_ids = {route: f"lockstep-{route}-{uuid.uuid4().hex[:8]}" for route in ("nginx", "direct")}
    for job_id in job_ids.values():
        journal.create(job_id, "bob", "character")
    via_nginx, hub = await open_stream(stack, client, f"/api/v1/sse/jobs/character/{job_ids['nginx']}")
    direct = await Api(stack.hubs[hub].url, client.token).stream(f"/api/v1/sse/jobs/character/{job_ids['direct']}")
    jobs = {"nginx": (job_ids["nginx"], via_nginx), "direct": (job_ids["direct"], direct)}
    for _, stream in jobs.values():
        assert [(await stream.frame()).type for _ in range(3)] == [None, "connected", "initial_status"]

    latency: dict[str, list[float]] = {"nginx": [], "direct": []}
    count = 30
    for n in range(1, count + 1):
        status = "completed" if n == count else "active"
        for route, (job_id, stream) in jobs.items():
            published = time.perf_counter()
            ids = journal.update(job_id, "bob", "character", status=status, progress=min(100, n * 3))
            # Bounded: a proxy that holds events back (a compressor, say) fails here.
            frame = await stream.frame(timeout=10)
            latency[route].append(1000 * (time.perf_counter() - published))
            assert frame is not None and frame.id == ids[0].decode(), f"event {n} did not come through {route}"
            assert frame.data["status"] == status and frame.data["progress"] == min(100, n * 3)
    for _, stream in jobs.values():
        assert await stream.frame() is None, "the stream ends after the terminal event"
    added = [a - b for a, b in zip(latency["nginx"], latency["direct"], strict=True)]
    print()
    print(summary("lock-step, publish to arrival directly", latency["direct"]))
    print(summary("lock-step, publish to arrival through nginx", latency["nginx"]))
    print(summary("lock-step, added by nginx (per event pair)", added))


@pytest.mark.gen_test(timeout=60)
async def test_a_held_long_poll_is_answered_by_the_hub_not_cut_by_nginx(stack, token):
    client = Api(stack.proxy.url, token("carol"))
    first = await client.get("/api/v1/poll/jobs/my", BROWSER_HEADERS)
    assert first.status == 200
    assert await first.json_body() == {"events": [], "cursor": "0-0"}

    started = time.monotonic()
    held = await client.get("/api/v1/poll/jobs/my?cursor=0-0", BROWSER_HEADERS)
    body = await held.body()
    elapsed = time.monotonic() - started
    assert held.status == 200, (held.status, body)  # a 504 would be nginx cutting the hold
    assert held.headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"events": [], "cursor": "0-0"}
    # Answered when the hub's hold ran out, not earlier by anyone else.
    assert elapsed >= LONGPOLL_SECONDS - 0.1, elapsed


@pytest.mark.gen_test(timeout=60)
async def test_an_idle_stream_gets_its_keepalives_through_nginx_and_stays_open(stack, token):
    stream, _ = await open_stream(stack, Api(stack.proxy.url, token("dan")), "/api/v1/sse/jobs/my")
    assert [(await stream.frame()).type for _ in range(2)] == [None, "connected"]
    started = time.monotonic()
    periods = 5
    for _ in range(periods):
        # One at a time: held back (by a compressor, say), these few bytes would not come.
        assert await stream.comment(timeout=5 * KEEPALIVE_SECONDS) == "keepalive"
    assert time.monotonic() - started >= (periods - 1) * KEEPALIVE_SECONDS
    # Still open: the next keepalive comes too.
    assert await stream.comment(timeout=5 * KEEPALIVE_SECONDS) == "keepalive"
    stream.close()


@pytest.mark.gen_test(timeout=60)
async def test_nginx_does_not_hide_a_client_that_stopped_reading(stack, token, settings, sync_redis):
    """With buffering off, nginx passes the client's back-pressure on to the
    hub, which drops the client (it resumes from its cursor later). A
    buffering proxy would soak the stream up into its temp files instead,
    and the hub would never learn that the client is gone."""
    journal = Journal(sync_redis, settings)
    job_id = "stuck" + uuid.uuid4().hex[:8]
    journal.create(job_id, "gus", "character")
    stream, hub = await open_stream(stack, Api(stack.proxy.url, token("gus")), f"/api/v1/sse/jobs/character/{job_id}")
    # From here on the client reads nothing more.
    server = stack.hubs[hub]
    bulky = "x" * 64 * 1024
    for n in range(400):  # 25 MiB at most: more than the socket buffers on the way hold
        journal.update(job_id, "gus", "character", status="active", progress=0, step=f"{n}:{bulky}")
        if n % 10 == 9 and server.metric("hub_slow_consumers_disconnected_total"):
            break
    print(f"\npublished {n + 1} events of 64 KiB")
    # The drop comes when the client's queue overflows, or its write times out.
    await eventually(lambda: server.metric("hub_slow_consumers_disconnected_total") >= 1, timeout=20)
    stream.close()


async def request_from(local_address: str, url: str, headers: dict[str, str]) -> Response:
    """A GET sent from `local_address` (which must be on loopback)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port, local_addr=(local_address, 0)), 10
    )
    lines = [f"GET {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    return await read_response(reader, writer, 10)


@pytest.mark.gen_test(timeout=60)
async def test_the_hub_logs_the_clients_address_as_nginx_saw_it(stack, token, settings, sync_redis):
    journal = Journal(sync_redis, settings)
    auth = {"Authorization": f"Bearer {token('erin')}"}
    # The second request claims another address; nginx overwrites X-Real-IP
    # and appends to X-Forwarded-For, so the claim changes nothing.
    claims: list[dict[str, str]] = [{}, {"X-Real-IP": "127.6.6.6", "X-Forwarded-For": "127.6.6.6"}]
    for claim in claims:
        job_id = "ip" + uuid.uuid4().hex[:12]
        journal.create(job_id, "erin", "character")
        path = f"/api/v1/characters/jobs/{job_id}"
        response = await request_from(CLIENT_ADDRESS, stack.proxy.url + path, {**auth, **claim})
        assert response.status == 200
        await response.body()

        def hub_line(path: str = path) -> str | None:
            for hub in stack.hubs:
                assert hub.output is not None
                for line in hub.output.read_text(errors="replace").splitlines():
                    if "hub.access" in line and f" {path} " in line:
                        return line
            return None

        line = await eventually(hub_line)
        assert f"({CLIENT_ADDRESS})" in line, line
        nginx_line = await eventually(
            lambda path=path: next((ln for ln in stack.proxy.log("access.log").splitlines() if path in ln), None)
        )
        assert nginx_line.startswith(f"{CLIENT_ADDRESS} "), nginx_line


@pytest.mark.gen_test(timeout=90)
async def test_a_client_moves_between_hub_processes_mid_job_without_loss(stack, token, settings, sync_redis):
    keys = KeySpace(settings.namespace)
    client = Api(stack.proxy.url, token("fay"))
    job_id = await client.create_character(name="Fay")
    path = f"/api/v1/sse/jobs/character/{job_id}"

    def last_id() -> tuple[int, int]:
        raw = sync_redis.hget(keys.job(job_id), "last_id")
        return parse_cursor(raw.decode()) if raw else (0, 0)

    received: list[Frame] = []
    served: list[int] = []
    for _ in range(50):
        before = stack.sse_opened()
        cursor = received[-1].id if received else None
        stream = await client.get(path, {**BROWSER_HEADERS, **({"Last-Event-ID": cursor} if cursor else {})})
        if stream.status == 204:
            break  # the client's cursor is the job's terminal event
        assert stream.status == 200
        served.append(stack.served_by(before))
        # One event per connection, then hang up, as a flaky network would.
        frame = await stream.frame()
        while frame is not None and frame.id is None:
            frame = await stream.frame()
        stream.close()
        assert frame is not None, "the stream ended without an event"
        received.append(frame)
        if frame.data.get("status") in ("completed", "failed"):
            continue
        # Reconnect only once something has happened meanwhile, so that the
        # next process has to replay what this client missed.
        current = parse_cursor(frame.id)
        await eventually(lambda current=current: last_id() > current, timeout=30)
    else:
        raise AssertionError("the job did not end")

    assert received[0].type == "initial_status"
    assert received[-1].data["status"] == "completed"
    history = [entry_id.decode() for entry_id, _ in sync_redis.xrange(keys.job_events(job_id))]
    start = history.index(received[0].id)
    assert [f.id for f in received[1:]] == history[start + 1 :], "an event was lost or repeated"
    assert len(received) >= 3, "the job ended before the client could move"
    assert set(served) == {0, 1}, f"one process served every connection: {served}"
    print(f"\nconnections served by hub: {served}")


def test_the_shipped_config_outlasts_the_hubs_default_hold_and_keepalive():
    """The stream location's read timeout is longer than what the hub holds
    quiet by default; otherwise nginx cuts held polls and idle streams."""
    text = TEMPLATE.read_text()
    match = re.search(r"location ~ \^/api/v1/\(sse\|poll\)/ \{(?P<body>.*?)\n\s*\}", text, re.S)
    assert match, "no streaming location in config/nginx.conf"
    body = match.group("body")
    assert re.search(r"^\s*proxy_buffering off;", body, re.M)
    timeout = re.search(r"^\s*proxy_read_timeout (\d+)s;", body, re.M)
    assert timeout, "no proxy_read_timeout in the streaming location"
    assert int(timeout.group(1)) > max(DEFAULT_KEEPALIVE_SECONDS, DEFAULT_LONGPOLL_TIMEOUT_SECONDS)


@pytest.mark.gen_test(timeout=60)
async def test_nginx_logs_paths_but_never_a_token_or_ticket_from_the_query(hub_process, nginx, token):
    """`?access_token=` and `?ticket=` are credentials (native EventSource
    cannot send headers): the shipped access log format leaves queries out."""
    proxy = nginx([hub_process(**HUB_ENV)])
    secret = token("ivy")
    status, body = await Api(proxy.url, secret).post("/api/v1/sse/tickets", {})
    assert status == 201, body
    ticket = body["ticket"]
    queries = {
        "/api/v1/sse/jobs/my": f"access_token={secret}",
        "/api/v1/poll/jobs/my": f"ticket={ticket}",
        "/api/v1/characters/jobs/nosuchjob": f"access_token={secret}",
    }
    for path, query in queries.items():
        answer = await request(f"{proxy.url}{path}?{query}")
        assert answer.status in (200, 404), (path, answer.status)  # 404: authenticated, no such job
        if path.startswith("/api/v1/sse/"):
            assert [(await answer.frame()).type for _ in range(2)] == [None, "connected"]
            answer.close()
        else:
            await answer.body()

    def logged() -> str | None:
        text = proxy.log("access.log")
        return text if all(path in text for path in queries) else None

    text = await eventually(logged)
    print(
        f"\naccess log: {len(text.splitlines())} lines; token {text.count(secret)}, ticket {text.count(ticket)} times"
    )
    assert secret not in text and ticket not in text, text
    assert "access_token" not in text and "ticket=" not in text, text
