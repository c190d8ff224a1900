"""A request costs what its answer carries, not what history holds: long-polls
read one batch of history, replaying SSE streams read and write it page by
page, and a long `/my` snapshot comes in pages that skip no job."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
from collections import Counter
from typing import Any

import pytest

from hub.store.history import REPLAY_PAGE
from hub.store.journal import Journal
from hub.web.handlers.poll import MAX_BATCH
from tests.support.environment import ROOT, need
from tests.support.http import read_response
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=300)

HISTORY = 10_000  # HUB_USER_HISTORY's default: all of it is kept
JOBS = 10
NOTE = "n" * 1000  # ~1 KB per event, as the audit measured


def fill_history(sync_redis: Any, settings: Any, user: str, events: int = HISTORY, note: str = NOTE) -> list[str]:
    """`events` events of `JOBS` unfinished jobs on the user's stream; their ids, oldest first."""
    ids: list[str] = []
    per_job = events // JOBS
    for job in range(JOBS):
        pipe = sync_redis.pipeline(transaction=False)
        journal = Journal(pipe, settings)
        job_id = f"{user}-{job}"
        journal.create(job_id, user, "character")
        for step in range(per_job - 1):
            journal.update(job_id, user, "character", status="active", progress=step * 100 // per_job, note=note)
        ids += [user_id.decode() for _, user_id in pipe.execute()]
    return ids


async def poll(client: Any, path: str, cursor: str | None = None) -> dict[str, Any]:
    response = await client.get(path + (f"?cursor={cursor}" if cursor else ""))
    assert response.status == 200, await response.body()
    body: dict[str, Any] = await response.json_body()
    return body


async def greeting(response: Any) -> None:
    """Reads the stream's `retry:` frame and its `connected` event."""
    assert (await response.frame()).retry is not None
    assert (await response.frame()).type == "connected"


# -- 1a: a long-poll reads one batch ---------------------------------------------------------------


async def test_a_long_poll_from_the_beginning_reads_one_batch_of_history(ctx, api, sync_redis, settings, monkeypatch):
    published = fill_history(sync_redis, settings, "alice")
    assert len(published) == HISTORY
    read = {"entries": 0, "bytes": 0, "calls": 0}
    xrange = ctx.redis.xrange

    async def counting_xrange(*args: Any, **kwargs: Any) -> Any:
        entries = await xrange(*args, **kwargs)
        read["calls"] += 1
        read["entries"] += len(entries)
        read["bytes"] += sum(len(k) + sum(len(f) + len(v) for f, v in fields.items()) for k, fields in entries)
        return entries

    monkeypatch.setattr(ctx.redis, "xrange", counting_xrange)
    alice = api("alice")

    # One poll from the very beginning: one answer's worth is read, not all of it.
    first = await poll(alice, "/api/v1/poll/jobs/my", "0-0")
    print(f"one /my?cursor=0-0: {read['entries']} entries, {read['bytes'] / 2**20:.2f} MiB read from Redis")
    assert len(first["events"]) == MAX_BATCH
    assert first["cursor"] == published[MAX_BATCH - 1]
    assert read["entries"] <= MAX_BATCH + 1, read

    # Following the cursors gets every event exactly once, in order.
    received = [event["id"] for event in first["events"]]
    cursor, polls = first["cursor"], 1
    while cursor != published[-1]:
        batch = await poll(alice, "/api/v1/poll/jobs/my", cursor)
        assert 0 < len(batch["events"]) <= MAX_BATCH
        received += [event["id"] for event in batch["events"]]
        cursor, polls = batch["cursor"], polls + 1
    assert received == published
    print(f"{polls} polls, {read['entries']} entries read in all for {HISTORY} events")
    assert read["entries"] <= HISTORY + polls


# -- 1b: a replaying stream holds one page -----------------------------------------------------------

STUCK = 4


async def open_stuck_stream(
    port: int, token: str, last_event_id: str | None, path: str = "/api/v1/sse/jobs/my"
) -> tuple[Any, Any]:
    """An SSE request from a client with a tiny receive window that reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{resume}\r\n".encode())
    await writer.drain()
    return reader, writer


async def growth_until_stalled(hub: Any, baseline: int, counter: str) -> tuple[int, float]:
    """The streams send until every buffer between them and their clients is
    full: the hub's RSS is sampled until they have all stopped (what they
    have sent, by `counter`, stays the same over 20 samples). Its growth
    over `baseline` at the peak, and what they sent."""
    await eventually(lambda: hub.metric("hub_connections", transport="sse") == STUCK, timeout=30)
    peak, samples = baseline, [-1.0]

    def stalled() -> bool:
        nonlocal peak
        peak = max(peak, hub.rss_bytes())
        samples.append(hub.metric(counter, transport="sse"))
        return samples[-1] >= STUCK * REPLAY_PAGE and len(set(samples[-20:])) == 1

    await eventually(stalled, timeout=60, interval=0.05)
    return peak - baseline, samples[-1]


async def test_streams_replaying_to_clients_that_do_not_read_hold_one_page_each(
    hub_process, settings, sync_redis, token
):
    hub = hub_process(HUB_WRITE_TIMEOUT_SECONDS="120", HUB_SUBSCRIBER_QUEUE="1000")
    published = fill_history(sync_redis, settings, "bob")
    bob = token("bob")
    # One replay first, so what every stream shares (code, caches) is in the baseline.
    reader, writer = await open_stuck_stream(hub.port, bob, published[-2])
    response = await read_response(reader, writer, timeout=10)
    await greeting(response)
    assert (await response.frame()).id == published[-1]
    writer.transport.abort()
    await eventually(lambda: hub.metric("hub_connections", transport="sse") == 0)
    baseline = hub.rss_bytes()

    stuck = [await open_stuck_stream(hub.port, bob, "0-0") for _ in range(STUCK)]
    growth, replayed = await growth_until_stalled(hub, baseline, "hub_events_replayed_total")
    history_bytes = HISTORY * len(NOTE)
    print(
        f"{STUCK} streams replaying {history_bytes / 2**20:.1f} MiB each to clients that do not read "
        f"(stalled after {replayed / STUCK:.0f} events each): "
        f"hub RSS grew by {growth / 2**20:.1f} MiB ({growth / STUCK / 2**20:.2f} MiB per stream)"
    )
    assert replayed < STUCK * HISTORY, "the clients must not have taken it all"
    assert growth < STUCK * 4 * 2**20, "a replaying stream must hold one page, not the whole history"

    # One of them starts reading: every event once, in order, then live ones.
    reader, writer = stuck[0]
    response = await read_response(reader, writer, timeout=30)
    await greeting(response)
    ids = [(await response.frame(timeout=30)).id for _ in range(HISTORY)]
    assert ids == published
    live = Journal(sync_redis, settings).update("bob-0", "bob", "character", status="active", progress=99)
    assert (await response.frame(timeout=30)).id == live[1].decode()
    for _, other in stuck:
        other.transport.abort()
    await eventually(lambda: hub.metric("hub_connections", transport="sse") == 0, timeout=30)


async def test_streams_of_my_sending_a_long_snapshot_to_clients_that_do_not_read_hold_one_page_each(
    hub_process, settings, sync_redis, token
):
    hub = hub_process(HUB_WRITE_TIMEOUT_SECONDS="120")
    pipe = sync_redis.pipeline(transaction=False)
    journal = Journal(pipe, settings)
    for number in range(OPEN_JOBS * 8):
        journal.create(f"m-{number}", "mia", "character")
        journal.update(f"m-{number}", "mia", "character", status="active", progress=1, note=NOTE)
    pipe.execute()
    mia = token("mia")
    baseline = hub.rss_bytes()
    stuck = [await open_stuck_stream(hub.port, mia, None) for _ in range(STUCK)]
    growth, sent = await growth_until_stalled(hub, baseline, "hub_events_delivered_total")
    print(
        f"{STUCK} streams of /my sending {OPEN_JOBS * 8} unfinished jobs (~1 KB each) to clients that do not "
        f"read (stalled after {sent / STUCK:.0f} each): hub RSS grew by {growth / 2**20:.1f} MiB "
        f"({growth / STUCK / 2**20:.2f} MiB per stream)"
    )
    assert sent < STUCK * OPEN_JOBS * 8, "the clients must not have taken it all"
    assert growth < STUCK * 4 * 2**20, "a stream sending a snapshot must hold one page of it"
    for _, writer in stuck:
        writer.transport.abort()


async def test_history_trimmed_under_a_stalled_replay_gives_a_reset_never_a_gap(
    hub_process, settings, sync_redis, token
):
    # A replay holds one page: if history is trimmed past the client's place
    # while it reads nothing, the events in between are gone from Redis too.
    hub = hub_process(HUB_WRITE_TIMEOUT_SECONDS="60", HUB_SUBSCRIBER_QUEUE="2000")
    journal = Journal(sync_redis, settings)
    first = journal.create("trimmed", "hal", "character")[0].decode()
    big = "z" * 8000  # more than the sockets between them hold, in the first page alone
    history = [journal.update("trimmed", "hal", "character", progress=1, note=big)[0].decode() for _ in range(900)]
    reader, writer = await open_stuck_stream(hub.port, token("hal"), first, path="/api/v1/sse/jobs/character/trimmed")
    response = await read_response(reader, writer, timeout=10)
    await greeting(response)
    # Enough news to trim the job's history (HUB_JOB_HISTORY, 1,000) past the
    # replay's place, then the job's end.
    for _ in range(settings.job_history):
        journal.update("trimmed", "hal", "character", progress=50)
    last = journal.update("trimmed", "hal", "character", status="completed", progress=100, result={})[0].decode()

    frames = await response.frames_until_end(timeout=60)
    types = [frame.type for frame in frames]
    assert "reset" in types, "the client must hear that history was lost under it"
    before = [frame.id for frame in frames[: types.index("reset")]]
    assert before == history[: len(before)], "what came before the reset came in order, with no gap"
    after = frames[types.index("reset") + 1 :]
    assert [(f.type, f.data["status"], f.id) for f in after] == [("initial_status", "completed", last)]
    print(f"{len(before)} events replayed, then reset and the job's final state")
    writer.close()


# -- 2: a `/my` snapshot longer than one answer ------------------------------------------------------

OPEN_JOBS = 1_200


def create_open_jobs(sync_redis: Any, settings: Any, user: str, count: int = OPEN_JOBS) -> set[str]:
    pipe = sync_redis.pipeline(transaction=False)
    journal = Journal(pipe, settings)
    ids = {f"{user}-job-{number:05d}" for number in range(count)}
    for job_id in sorted(ids):
        journal.create(job_id, user, "character")
    pipe.execute()
    return ids


@pytest.mark.hub_settings(longpoll_timeout_seconds=2)
async def test_a_long_poll_of_my_reports_every_unfinished_job_once_then_live_events(ctx, api, sync_redis, settings):
    jobs = create_open_jobs(sync_redis, settings, "carol")
    carol = api("carol")
    # The loop every client runs: send back the cursor of the previous answer.
    seen: Counter[str] = Counter()
    body = await poll(carol, "/api/v1/poll/jobs/my")
    answers = 1
    while True:
        assert all(event["type"] == "initial_status" for event in body["events"])
        seen.update(event["jobId"] for event in body["events"])
        if not body["events"] or answers > 10:
            break
        body = await poll(carol, "/api/v1/poll/jobs/my", body["cursor"])
        answers += 1
    print(f"{len(seen)} of {OPEN_JOBS} unfinished jobs reported in {answers} answers")
    assert set(seen) == jobs, f"{len(jobs - set(seen))} jobs never reported"
    assert max(seen.values()) == 1
    # Then live events follow from the cursor in hand.
    update = await ctx.journal.update("carol-job-00007", "carol", "character", status="active", progress=5)
    live = await poll(carol, "/api/v1/poll/jobs/my", body["cursor"])
    assert [(e["type"], e["jobId"], e["id"]) for e in live["events"]] == [
        ("job_update", "carol-job-00007", update[1].decode())
    ]


@pytest.mark.hub_settings(longpoll_timeout_seconds=2)
async def test_a_snapshot_whose_order_expired_mid_way_still_reports_every_job_once(ctx, api, sync_redis, settings):
    jobs = create_open_jobs(sync_redis, settings, "kim")
    kim = api("kim")
    body = await poll(kim, "/api/v1/poll/jobs/my")
    seen = Counter(event["jobId"] for event in body["events"])
    # The hub keeps the snapshot's order for a while; here it is gone at once.
    orders = list(sync_redis.scan_iter(match=f"{settings.namespace}:*:order:*"))
    assert len(orders) == 1
    sync_redis.delete(*orders)
    while body["events"]:
        body = await poll(kim, "/api/v1/poll/jobs/my", body["cursor"])
        seen.update(event["jobId"] for event in body["events"])
    assert set(seen) == jobs and max(seen.values()) == 1
    assert list(sync_redis.scan_iter(match=f"{settings.namespace}:*:order:*")) == [], "the last page drops the order"


async def test_a_snapshot_position_is_refused_where_it_means_nothing(ctx, api, sync_redis, settings):
    create_open_jobs(sync_redis, settings, "lou", count=MAX_BATCH + 1)
    lou = api("lou")
    position = (await poll(lou, "/api/v1/poll/jobs/my"))["cursor"]
    assert position.count("-") == 2
    for path in ("/api/v1/poll/jobs/character/lou-job-00001", "/api/v1/sse/jobs/character/lou-job-00001"):
        response = await lou.get(f"{path}?{'cursor' if 'poll' in path else 'lastEventId'}={position}")
        assert response.status == 400
        assert (await response.json_body())["error"] == "bad_request"
    forged = position.rsplit("-", 1)[0] + "-12345"  # not a job id's bytes
    response = await lou.get(f"/api/v1/poll/jobs/my?cursor={forged}")
    assert response.status == 400


async def test_an_sse_stream_of_my_reports_every_unfinished_job_once_then_live_events(ctx, api, sync_redis, settings):
    jobs = create_open_jobs(sync_redis, settings, "dora")
    stream = await api("dora").stream("/api/v1/sse/jobs/my")
    await greeting(stream)
    seen = Counter(frame.data["jobId"] for frame in await frames(stream, OPEN_JOBS))
    assert set(seen) == jobs and max(seen.values()) == 1
    update = await ctx.journal.update("dora-job-00003", "dora", "character", status="active", progress=5)
    frame = await stream.frame()
    assert (frame.type, frame.id) == ("job_update", update[1].decode())
    stream.abort()


async def my_stream_cut_after(client: Any, count: int) -> list[Any]:
    """The first `count` frames of the client's /my stream, then the connection is cut."""
    stream = await client.stream("/api/v1/sse/jobs/my")
    await greeting(stream)
    first = await frames(stream, count)
    stream.abort()
    return first


async def test_an_sse_stream_cut_mid_snapshot_resumes_it_where_it_stopped(ctx, api, sync_redis, settings):
    jobs = create_open_jobs(sync_redis, settings, "erin")
    erin = api("erin")
    first = await my_stream_cut_after(erin, 700)
    resumed = await erin.stream("/api/v1/sse/jobs/my", last_event_id=first[-1].id)
    await greeting(resumed)
    rest = await frames(resumed, OPEN_JOBS - 700)
    seen = Counter(frame.data["jobId"] for frame in first + rest)
    assert set(seen) == jobs and max(seen.values()) == 1
    update = await ctx.journal.update("erin-job-01100", "erin", "character", status="active", progress=5)
    frame = await resumed.frame()
    assert (frame.type, frame.id) == ("job_update", update[1].decode())
    resumed.abort()


async def change_jobs_after_the_head(journal: Any, user: str) -> dict[str, str]:
    """While a client is part way through the snapshot: one job not yet
    reported moves on, another finishes, a new one starts. Their events' ids."""
    moved = await journal.update(f"{user}-job-01100", user, "character", status="active", progress=40)
    finished = await journal.update(f"{user}-job-01150", user, "character", status="completed", result={})
    new = await journal.create(f"{user}-job-new", user, "character")
    return {
        f"{user}-job-01100": moved[1].decode(),
        f"{user}-job-01150": finished[1].decode(),
        f"{user}-job-new": new[1].decode(),
    }


def check_story(events: list[dict[str, Any]], jobs: set[str], changed: dict[str, str]) -> None:
    """Every job reported, none by two initial_status, and a job that changed
    after the snapshot's head told by its events after the head instead."""
    initial = Counter(e["jobId"] for e in events if e["type"] == "initial_status")
    assert max(initial.values()) == 1
    assert set(initial) == jobs - set(changed), "a job that changed after the head is told by its events"
    updates = [(e["jobId"], e["id"]) for e in events if e["type"] == "job_update"]
    assert updates == sorted(changed.items(), key=lambda item: item[1]), "each change once, in order"


@pytest.mark.hub_settings(longpoll_timeout_seconds=2)
async def test_jobs_that_change_while_a_long_poll_pages_the_snapshot_are_told_by_their_events(
    ctx, api, sync_redis, settings
):
    jobs = create_open_jobs(sync_redis, settings, "ivy")
    ivy = api("ivy")
    body = await poll(ivy, "/api/v1/poll/jobs/my")
    events = list(body["events"])
    changed = await change_jobs_after_the_head(ctx.journal, "ivy")
    for _ in range(4):
        body = await poll(ivy, "/api/v1/poll/jobs/my", body["cursor"])
        events += body["events"]
    check_story(events, jobs, changed)


async def test_an_sse_snapshot_resumed_after_jobs_changed_tells_them_by_their_events(ctx, api, sync_redis, settings):
    jobs = create_open_jobs(sync_redis, settings, "jude")
    jude = api("jude")
    first = await my_stream_cut_after(jude, 600)
    changed = await change_jobs_after_the_head(ctx.journal, "jude")
    resumed = await jude.stream("/api/v1/sse/jobs/my", last_event_id=first[-1].id)
    await greeting(resumed)
    rest = await frames(resumed, OPEN_JOBS - 600 - 2)
    tail = [await resumed.frame() for _ in range(len(changed))]
    events = [{**frame.data, "id": frame.id} for frame in first + rest + tail]
    check_story(events, jobs, changed)
    resumed.abort()


async def frames(stream: Any, count: int, timeout: float = 20) -> list[Any]:
    """The next `count` frames, all of them `initial_status`, within `timeout` seconds."""
    got: list[Any] = []

    async def read() -> None:
        while len(got) < count:
            frame = await stream.frame(timeout)
            assert frame is not None and frame.type == "initial_status", (len(got), frame)
            got.append(frame)

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(f"{len(got)} of {count} initial_status frames came within {timeout} s") from None
    return got


def run_python_client(url: str, token: str, wanted: int) -> list[dict[str, Any]]:
    from hub_client import HubClient

    events: list[dict[str, Any]] = []
    for event in HubClient(url, token).watch_my(transport="longpoll"):
        events.append(event)
        if len(events) == wanted:
            return events
    return events


async def test_the_python_client_long_polling_my_reports_every_unfinished_job_once(
    hub_process, sync_redis, settings, token
):
    hub = hub_process(HUB_LONGPOLL_TIMEOUT_SECONDS="2")
    jobs = create_open_jobs(sync_redis, settings, "finn")
    result: list[list[dict[str, Any]]] = []
    thread = threading.Thread(
        target=lambda: result.append(run_python_client(hub.url, token("finn"), OPEN_JOBS + 1)), daemon=True
    )
    thread.start()
    await eventually(lambda: hub.metric("hub_events_delivered_total", transport="longpoll") >= OPEN_JOBS, timeout=60)
    update = Journal(sync_redis, settings).update("finn-job-00001", "finn", "character", status="active", progress=5)
    await eventually(lambda: not thread.is_alive(), timeout=60)
    events = result[0]
    seen = Counter(event["jobId"] for event in events if event["type"] == "initial_status")
    assert set(seen) == jobs and max(seen.values()) == 1
    assert (events[-1]["type"], events[-1]["id"]) == ("job_update", update[1].decode())


async def test_the_javascript_client_long_polling_my_reports_every_unfinished_job_once(
    hub_process, sync_redis, settings, token
):
    node = need_node()
    hub = hub_process(HUB_LONGPOLL_TIMEOUT_SECONDS="2")
    jobs = create_open_jobs(sync_redis, settings, "gail")
    script = ROOT / "tests" / "node" / "follow_my.mjs"
    env = dict(os.environ, HUB_URL=hub.url, HUB_TOKEN=token("gail"), WANTED=str(OPEN_JOBS + 1))
    process = subprocess.Popen([node, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        await eventually(
            lambda: hub.metric("hub_events_delivered_total", transport="longpoll") >= OPEN_JOBS, timeout=60
        )
        journal = Journal(sync_redis, settings)
        update = journal.update("gail-job-00002", "gail", "character", status="active", progress=5)
        out, err = await asyncio.get_running_loop().run_in_executor(None, lambda: process.communicate(timeout=60))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    seen = Counter(line["event"]["jobId"] for line in events if line["event"]["type"] == "initial_status")
    assert set(seen) == jobs and max(seen.values()) == 1
    assert (events[-1]["event"]["type"], events[-1]["id"]) == ("job_update", update[1].decode())


def need_node() -> str:
    import shutil

    node = shutil.which("node")
    need(node is not None, "node is not installed")
    assert node is not None
    return node
