"""Load for failover tests: external jobs whose progress is published
steadily through the service API (each event numbered in `step`), clients
that follow them, and the final history to judge those clients by (see
tests.support.continuity)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from hub.store.keys import KeySpace
from hub.store.wire import FIELD_DATA
from tests.support.continuity import Entry, Verdict, Watch, check, cursor, follow
from tests.support.http import Api
from tests.support.waiting import eventually

#: Seconds between two events of one job.
PUBLISH_INTERVAL = 0.05


@dataclass
class Feed:
    """An external job, and what became of each publish (by sequence number)."""

    job_id: str
    owner: str
    acknowledged: dict[int, float] = field(default_factory=dict)
    refused: list[int] = field(default_factory=list)
    last_seq: int = 0

    def acknowledged_since(self, moment: float) -> int:
        return sum(1 for at in self.acknowledged.values() if at >= moment)


@dataclass
class Clients:
    """The failover test's clients (by stream) and publishers, as tasks."""

    jobs: list[Watch] = field(default_factory=list)
    mine: list[tuple[str, Watch]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Set while the publishers publish; cleared, they wait.
    publishing: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False

    def __post_init__(self) -> None:
        self.publishing.set()

    def every(self) -> list[Watch]:
        return [*self.jobs, *(watch for _, watch in self.mine)]

    def stop_publishing(self) -> None:
        self.stopped = True
        self.publishing.set()

    def follow(self, watch: Watch) -> asyncio.Task[None]:
        return self.start(follow(watch))

    def start(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self.tasks.append(task)
        return task

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def publish(feed: Feed, hubs: list[str], token: str, clients: Clients) -> None:
    """Publishes one event after the other (each to the next hub) while
    `clients` let it; a publish that fails is not repeated: the next has
    the next number."""
    while True:
        await clients.publishing.wait()
        if clients.stopped:
            return
        feed.last_seq += 1
        seq = feed.last_seq
        api = Api(hubs[seq % len(hubs)], token)
        try:
            status, _ = await api.post(f"/api/v1/jobs/{feed.job_id}/events", {"status": "active", "step": str(seq)})
        except (OSError, TimeoutError, ValueError):
            status = 0
        if status == 200:
            feed.acknowledged[seq] = time.monotonic()
        else:
            feed.refused.append(seq)
        await asyncio.sleep(PUBLISH_INTERVAL)


async def finish(feed: Feed, hubs: list[str], token: str) -> None:
    """Publishes the job's end; a 409 says an earlier try got through."""

    async def ended() -> bool:
        try:
            status, _ = await Api(hubs[0], token).post(
                f"/api/v1/jobs/{feed.job_id}/events", {"status": "completed", "result": {"last": feed.last_seq}}
            )
        except (OSError, TimeoutError, ValueError):
            return False
        return status in (200, 409)

    await eventually(ended, timeout=30, interval=0.2)


async def create_character(hub: str, token: str) -> str:
    async def created() -> str | None:
        try:
            status, body = await Api(hub, token).post("/api/v1/characters", {"name": "Ada"})
        except (OSError, TimeoutError, ValueError):
            return None
        return str(body["jobId"]) if status == 202 else None

    return str(await eventually(created, timeout=30, interval=0.2))


def final_history(client: redis.Redis, stream: str) -> list[Entry]:
    return [Entry(key.decode(), json.loads(fields[FIELD_DATA.encode()])) for key, fields in client.xrange(stream)]


def steps_of(history: list[Entry]) -> set[int]:
    return {int(entry.data["step"]) for entry in history if entry.data.get("step", "").isdigit()}


def reached(watch: Watch, end: str) -> bool:
    return watch.last_cursor is not None and watch.last_cursor >= cursor(end)


def publish_outage(feed: Feed, killed_at: float) -> float:
    before = [at for at in feed.acknowledged.values() if at < killed_at]
    after = [at for at in feed.acknowledged.values() if at >= killed_at]
    return min(after) - max(before) if before and after else float("nan")


async def follow_new_character(clients: Clients, hub: str, token: str) -> str:
    """Starts a character job through `hub`, and a client that follows it:
    whether the worker followed the fault."""
    job_id = await create_character(hub, token)
    clients.jobs.append(Watch(hub, f"/api/v1/sse/jobs/character/{job_id}", token))
    clients.follow(clients.jobs[-1])
    return job_id


async def wind_down(
    clients: Clients, publishing: list[asyncio.Task[None]], feeds: list[Feed], hubs: list[str], token: str
) -> float:
    """Stops the publishers, then ends each feed's job; returns when the
    publishing stopped (time.monotonic())."""
    clients.stop_publishing()
    await asyncio.gather(*publishing)
    stopped = time.monotonic()
    await asyncio.gather(*(finish(feed, hubs, token) for feed in feeds))
    return stopped


def final_histories(client: Any, keys: KeySpace, clients: Clients) -> dict[str, list[Entry]]:
    """Each followed stream's final history, by path (`/my of USER` for a
    user's), read with `client` (one that reaches the keys' node)."""
    histories = {w.path: final_history(client, keys.job_events(w.path.rsplit("/", 1)[1])) for w in clients.jobs}
    for user, _ in clients.mine:
        histories[f"/my of {user}"] = final_history(client, keys.user_events(user))
    return histories


async def until_every_end(clients: Clients, read: Any) -> dict[str, list[Entry]]:
    """Waits for every job's client to reach its end, reads the final
    histories (`read()`), and waits for every /my client to reach the end of
    its user's; returns the histories."""
    await eventually(lambda: all(watch.ended for watch in clients.jobs), timeout=60)
    histories: dict[str, list[Entry]] = read()
    await eventually(lambda: all(reached(w, histories[f"/my of {user}"][-1].id) for user, w in clients.mine), 30)
    return histories


def verdicts_of(clients: Clients, histories: dict[str, list[Entry]]) -> dict[str, Verdict]:
    """What each client got, judged by the rule (tests.support.continuity)."""
    verdicts = {f"{w.hub}{w.path}": check(w.frames, histories[w.path]) for w in clients.jobs}
    for user, w in clients.mine:
        verdicts[f"{w.hub}{w.path} of {user}"] = check(w.frames, histories[f"/my of {user}"])
    return verdicts
