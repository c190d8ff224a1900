"""Flow control for slow clients: while events wait for a client, a job's
newer progress replaces its older progress; nothing else is ever dropped.

A client that pauses catches up with each job's latest state instead of
being disconnected, ids still only grow, every status change and terminal
event arrives, and the hub holds a few events per job meanwhile, not
everything published. Long-poll answers carry every event and a long-poll
is never dropped for being slow."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

import pytest

from hub.delivery.batch import Batch
from hub.delivery.pending import PendingEvents
from hub.delivery.reasons import CloseReason
from hub.delivery.sources import JobSource
from hub.delivery.subscriber import Subscriber
from hub.store.events import Event, parse_cursor
from hub.store.journal import Journal
from hub.store.keys import KeySpace
from tests.support.process_tree import connection_owners, listens, live_children
from tests.support.sse import EventReader, Frame
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=180)

JOBS = 10
UPDATES_PER_JOB = 800
#: ~2 KB per update: 8,000 updates are ~16 MB in all, four times what
#: loopback's socket buffers take at most (tcp_wmem's 4 MiB by default).
NOTE = "x" * 2000
QUEUE = 50


def update(job: str, number: int, status: str = "active", **fields: Any) -> Event:
    """A job_update as the hub gets it from Redis, id `number`-0."""
    payload = {"type": "job_update", "jobId": job, "jobType": "character", "status": status, **fields}
    return Event.make(payload, f"{number}-0", terminal=status in ("completed", "failed"))


def drain(queue: PendingEvents) -> list[Event]:
    taken = []
    while queue:
        taken.append(queue.popleft())
    return taken


def ids(events: list[Event]) -> list[str | None]:
    return [event.id for event in events]


# -- the queue itself ------------------------------------------------------


def test_only_an_active_job_update_with_an_id_is_progress():
    assert update("a", 1, progress=10).progress_job == "a"
    assert update("a", 1, progress=10, step="started", attempt=2).progress_job == "a"
    never = [
        update("a", 1, "completed", result={}),
        update("a", 1, "failed", failedReason="boom"),
        update("a", 1, "queued"),
        update("a", 1, "retrying"),
        Event.make({"type": "job_update", "jobId": "a", "status": "active"}),  # no id
        Event.make({"type": "job_update", "status": "active"}, "1-0"),  # no job
        Event.make({"type": "initial_status", "jobId": "a", "status": "active"}, "1-0"),
        Event.make({"type": "reset", "jobId": "a", "message": "active"}, "1-0"),
        Event.make({"type": "connected", "jobId": "a", "message": "active"}),
        Event.make({"type": "job_update", "jobId": "a", "status": "active"}, "1-0", terminal=True),
    ]
    assert [event.progress_job for event in never] == [None] * len(never)


def test_newer_progress_replaces_older_progress_of_the_same_job_and_nothing_else():
    collapsed = []
    queue = PendingEvents(100, on_collapsed=lambda: collapsed.append(1))
    events = [
        update("a", 1, progress=10),
        update("b", 2, progress=10),
        update("c", 3, "queued"),
        update("a", 4, progress=20),
        update("b", 5, "retrying"),
        update("c", 6, "completed", result={}),
        update("a", 7, progress=30),
        Event.make({"type": "reset", "jobId": "a"}, "8-0"),
        update("b", 9, progress=5),
    ]
    for event in events:
        assert queue.append(event)
    # a's 10 and 20 are replaced by its 30, b's 10 by its 5 (after its retry):
    # each newer one at the end, so ids still only grow.
    assert len(queue) == 6 and len(collapsed) == 3
    assert ids(drain(queue)) == ["3-0", "5-0", "6-0", "7-0", "8-0", "9-0"]


def test_progress_already_handed_out_is_not_replaced_again():
    collapsed = []
    queue = PendingEvents(10, on_collapsed=lambda: collapsed.append(1))
    queue.append(update("a", 1, progress=10))
    assert queue.popleft().id == "1-0"
    queue.append(update("a", 2, progress=20))
    queue.append(update("a", 3, progress=30))
    assert ids(drain(queue)) == ["3-0"] and len(collapsed) == 1
    queue.append(update("a", 4, progress=40))  # nothing of a waits: kept as it is
    assert ids(drain(queue)) == ["4-0"] and len(collapsed) == 1


def test_without_a_collapse_counter_every_event_is_kept():
    queue = PendingEvents(10)
    for number in range(1, 6):
        assert queue.append(update("a", number, progress=number))
    assert ids(drain(queue)) == [f"{n}-0" for n in range(1, 6)]


def test_the_bound_holds_what_cannot_collapse_while_progress_of_a_waiting_job_still_fits():
    queue = PendingEvents(3, on_collapsed=lambda: None)
    assert queue.append(update("a", 1, progress=10))
    assert queue.append(update("b", 2, "queued"))
    assert queue.append(update("c", 3, "retrying"))
    assert not queue.append(update("d", 4, "queued")), "full of events that cannot collapse"
    assert not queue.append(update("d", 5, progress=10)), "d has nothing waiting to replace"
    assert queue.append(update("a", 6, progress=20)), "replaces a's 10: the queue does not grow"
    assert len(queue) == 3
    assert ids(drain(queue)) == ["2-0", "3-0", "6-0"]


def test_replaced_entries_are_swept_out_so_the_queue_stays_within_twice_its_bound():
    queue = PendingEvents(4, on_collapsed=lambda: None)
    queue.append(update("b", 1, "queued"))
    for number in range(2, 10_000):
        assert queue.append(update("a", number, progress=number % 100))
        # Blank entries are kept only until they would double the queue.
        assert len(queue._entries) <= 2 * 4
    assert len(queue) == 2
    assert ids(drain(queue)) == ["1-0", "9999-0"]


def test_dropping_through_a_cursor_skips_replaced_entries_and_stops_at_one_without_id():
    queue = PendingEvents(10, on_collapsed=lambda: None)
    for event in (update("a", 1, progress=1), update("b", 2, "queued"), update("a", 3, progress=3)):
        queue.append(event)
    queue.append(Event.make({"type": "job_update", "jobId": "c", "status": "queued"}))  # no id
    queue.append(update("a", 5, progress=5))
    queue.drop_through(parse_cursor("4-0"))
    assert len(queue) == 2
    queue.append(update("a", 6, progress=6))  # a's 5 still waits: replaced
    assert [e.id for e in drain(queue)] == [None, "6-0"]


# -- a subscriber with a writer that is busy ----------------------------------


class Bus:
    async def subscribe(self, channel: str, member: Any) -> None:
        pass

    def unsubscribe(self, channel: str, member: Any) -> None:
        pass


class History:
    """Nothing after any cursor: the subscriber goes live at once."""

    async def after(self, stream: str, cursor: Any, limit: int) -> tuple[list[Event], bool]:
        return [], True


class StuckWriter:
    """A socket the kernel takes nothing more from after the first write."""

    def __init__(self) -> None:
        self.written: list[Event] = []
        self.reason: str | None = None

    def start(self) -> bool:
        return True

    def write(self, events: Any) -> bool:
        self.written += events
        return False

    def keepalive(self) -> None:
        pass

    def end(self, reason: str) -> None:
        self.reason = reason


def subscriber(**options: Any) -> Subscriber:
    return Subscriber(
        bus=Bus(),  # type: ignore[arg-type]
        history=History(),  # type: ignore[arg-type]
        source=JobSource("a", KeySpace("t")),
        start=parse_cursor("0-1"),
        max_queued=5,
        expires_at=float("inf"),
        on_sent=lambda events, live: None,
        on_close=lambda reason: None,
        **options,
    )


async def test_a_stream_behind_a_busy_writer_collapses_progress_then_is_dropped_when_full():
    collapsed = []
    client = subscriber(on_collapsed=lambda: collapsed.append(1))
    writer = StuckWriter()
    await client.open()
    await client.replay(writer, 100)
    client.push(update("a", 1, progress=1))  # written: the writer is busy from now on
    for number in range(2, 1_000):
        client.push(update("a", number, progress=number % 100))
    assert not client.closed and len(collapsed) == 997
    for number in range(1_000, 1_005):
        client.push(update("a", number, "retrying"))
    assert client.closed_reason == CloseReason.SLOW and writer.reason == CloseReason.SLOW


async def test_a_long_poll_whose_answer_is_full_is_answered_not_dropped():
    client = subscriber(full_reason=CloseReason.ANSWERED)
    batch = Batch(3)
    await client.open()
    await client.replay(batch, 3)
    for number in range(1, 100):
        client.push(update("a", number, progress=number))
    assert client.closed_reason == CloseReason.ANSWERED
    # Every event, none collapsed; the next poll goes on from the last one.
    assert ids(batch.events) == ["1-0", "2-0", "3-0"]
    assert client.resume_cursor() == "3-0"


# -- a real client that pauses, on a real hub -----------------------------------


async def open_paused_stream(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, EventReader]:
    """`/my` over HTTP/1.0 (no chunking: the body is the stream itself) on a
    socket with a tiny receive window, read up to the end of its snapshot."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    writer.write(f"GET /api/v1/sse/jobs/my HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    parser = EventReader()
    snapshot: list[Frame] = []
    while len([f for f in snapshot if f.type == "initial_status"]) < JOBS:
        snapshot += parser.feed(await reader.read(65536))
    return reader, writer, parser


async def hub_processes(hub, processes: int) -> list[int]:
    if processes == 1:
        return [hub.pid]

    def ready() -> list[int] | None:
        children = live_children(hub.pid)
        return children if len(children) == processes and all(listens(pid, hub.port) for pid in children) else None

    return list(await eventually(ready, timeout=30, interval=0.05))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-processes"])
async def test_a_paused_client_catches_up_with_each_jobs_latest_state(
    hub_process, settings, sync_redis, token, processes
):
    # Given a hub whose queue holds 50 events, a write timeout longer than
    # the pause, and a user with 10 jobs, followed on /my
    env = {"HUB_SUBSCRIBER_QUEUE": str(QUEUE), "HUB_WRITE_TIMEOUT_SECONDS": "60"}
    hub = hub_process(**env, **({"HUB_PROCESSES": str(processes)} if processes > 1 else {}))
    pids = await hub_processes(hub, processes)
    journal = Journal(sync_redis, settings)
    jobs = [f"paused{i}" for i in range(JOBS)]
    for job_id in jobs:
        journal.create(job_id, "pat", "character")
    reader, writer, parser = await open_paused_stream(hub.port, token("pat"))
    serving = connection_owners(hub.port, pids)[writer.get_extra_info("sockname")[1]]
    bus_before = hub.metric("hub_bus_messages_total")
    baseline = peak = rss_bytes(serving)

    # When the client stops reading while each job reports 800 times (~16 MB)
    # and then ends, half of them completed, half failed
    for number in range(UPDATES_PER_JOB):
        for job_id in jobs:
            journal.update(
                job_id, "pat", "character", status="active", progress=number // 8, step=str(number), note=NOTE
            )
        if number % 20 == 0:
            peak = max(peak, rss_bytes(serving))
    for index, job_id in enumerate(jobs):
        if index % 2:
            journal.update(job_id, "pat", "character", status="failed", failedReason="boom", result={"error": "boom"})
        else:
            journal.update(job_id, "pat", "character", status="completed", progress=100, result={"n": index})
    published = JOBS * (UPDATES_PER_JOB + 1)
    # ... and every one of those events has reached the hub
    await eventually(lambda: hub.metric("hub_bus_messages_total") - bus_before >= published, timeout=60)
    peak = max(peak, rss_bytes(serving))
    assert hub.metric("hub_events_coalesced_total", transport="sse") > 0

    # Then, reading again, it gets every job's end, after its latest progress
    frames: list[Frame] = []
    ended: set[str] = set()
    while len(ended) < JOBS:
        chunk = await asyncio.wait_for(reader.read(65536), timeout=30)
        assert chunk, "the hub closed the stream"
        for frame in parser.feed(chunk):
            frames.append(frame)
            if frame.data.get("status") in ("completed", "failed"):
                ended.add(frame.data["jobId"])
    writer.transport.abort()

    assert hub.metric("hub_slow_consumers_disconnected_total") == 0
    cursors = [parse_cursor(frame.id) for frame in frames if frame.id is not None]
    assert len(cursors) == len(frames) and cursors == sorted(set(cursors)), "ids only grow"
    by_job: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in jobs}
    for frame in frames:
        by_job[frame.data["jobId"]].append(frame.data)
    for index, (job_id, events) in enumerate(by_job.items()):
        statuses = [event["status"] for event in events]
        assert statuses.count("completed") + statuses.count("failed") == 1, job_id
        assert events[-1]["status"] == ("failed" if index % 2 else "completed"), job_id
        assert set(statuses[:-1]) <= {"active"}, job_id
        assert events[-2]["step"] == str(UPDATES_PER_JOB - 1), f"{job_id}: its newest progress before its end"
        steps = [int(event["step"]) for event in events[:-1]]
        assert steps == sorted(set(steps)), f"{job_id}: progress in the order published"

    progress_received = sum(1 for frame in frames if frame.data["status"] == "active")
    progress_published = JOBS * UPDATES_PER_JOB
    coalesced = hub.metric("hub_events_coalesced_total", transport="sse")
    growth, published_bytes = peak - baseline, progress_published * len(NOTE)
    print(
        f"\n{progress_published} progress updates published, {progress_received} received, "
        f"{coalesced:.0f} coalesced; events by job: {dict(Counter(f.data['jobId'] for f in frames))}; "
        f"hub RSS grew by {growth / 2**20:.2f} MiB at most for {published_bytes / 2**20:.1f} MiB published"
    )
    # What the kernel's buffers took went through; what waited in the hub collapsed.
    assert progress_received < progress_published / 2, "most progress collapsed while the client was paused"
    # Each update is either sent or replaced by a newer one: none is lost otherwise.
    assert coalesced == progress_published - progress_received
    assert growth < published_bytes / 4, "the hub must not buffer what a paused client does not read"
