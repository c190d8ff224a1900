"""A minimal server equivalent to the hub's live path, on sse-starlette and
uvicorn, to compare the hub with: Redis pub/sub in, SSE out.

It does what a small hand-written service would: verify the JWT, subscribe
the process's one pub/sub connection to the job's (or the user's) channel,
and forward each message with the same `id:` and JSON `data:` lines as the
hub. It does not check job ownership, replay history, resume from a cursor
or enforce limits, so it is the cheaper of the two by design.

Configured with the hub's variables: HUB_PORT, HUB_REDIS_URL,
HUB_JWT_SECRET, HUB_NAMESPACE, HUB_KEEPALIVE_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import jwt
import uvicorn
from redis.asyncio import Redis
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.store.wire import Message

#: Messages waiting for one client; beyond, the client's messages are dropped.
QUEUE_LIMIT = 1_000


class Fanout:
    """The process's one pub/sub connection, shared by every stream."""

    def __init__(self, redis: Redis) -> None:
        self.pubsub = redis.pubsub()
        self.channels: dict[str, set[asyncio.Queue[tuple[str, str]]]] = {}
        self.confirmed: dict[str, asyncio.Future[None]] = {}
        self.dropped = 0
        self.ready = False
        self.pending: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        await self.pubsub.connect()  # type: ignore[no-untyped-call]
        self.ready = True
        while True:
            message = await self.pubsub.get_message(timeout=5.0)
            if message is None:
                continue
            channel = message["channel"].decode()
            if message["type"] == "subscribe":
                future = self.confirmed.get(channel)
                if future is not None and not future.done():
                    future.set_result(None)
            elif message["type"] == "message":
                # As the hub's Lua publishes it (hub.store.wire).
                event_id, _, _, data = Message.decode(message["data"])
                for queue in self.channels.get(channel, ()):
                    try:
                        queue.put_nowait((event_id, data))
                    except asyncio.QueueFull:
                        self.dropped += 1

    async def add(self, channel: str, queue: asyncio.Queue[tuple[str, str]]) -> None:
        """Returns once Redis confirmed the channel, so no later event is missed."""
        if channel not in self.channels:
            self.channels[channel] = set()
            self.confirmed[channel] = asyncio.get_running_loop().create_future()
            await self.pubsub.subscribe(channel)
        self.channels[channel].add(queue)
        await asyncio.wait_for(asyncio.shield(self.confirmed[channel]), 5.0)

    def remove(self, channel: str, queue: asyncio.Queue[tuple[str, str]]) -> None:
        queues = self.channels.get(channel)
        if queues is None:
            return
        queues.discard(queue)
        if not queues:
            del self.channels[channel]
            del self.confirmed[channel]
            task = asyncio.get_running_loop().create_task(self._unsubscribe(channel))
            self.pending.add(task)  # held, so it is not collected mid-flight
            task.add_done_callback(self.pending.discard)

    async def _unsubscribe(self, channel: str) -> None:
        await self.pubsub.unsubscribe(channel)


SECRET = os.environ.get("HUB_JWT_SECRET", "")
NAMESPACE = os.environ.get("HUB_NAMESPACE", "hub")
KEEPALIVE = float(os.environ.get("HUB_KEEPALIVE_SECONDS", "15"))
redis = Redis.from_url(os.environ.get("HUB_REDIS_URL", "redis://127.0.0.1:6379/0"))
fanout = Fanout(redis)


def user_of(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.InvalidTokenError:
        return None
    return str(claims["sub"]) if scheme.lower() == "bearer" else None


async def stream(request: Request) -> Response:
    user = user_of(request)
    if user is None:
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    job_id = request.path_params.get("job_id")
    channel = f"{NAMESPACE}:ch:job:{job_id}" if job_id else f"{NAMESPACE}:ch:user:{user}"
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(QUEUE_LIMIT)
    await fanout.add(channel, queue)
    greeting: dict[str, Any] = {"type": "connected", "message": "Connected"}
    if job_id:
        greeting["jobId"] = job_id

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"retry": 3000, "data": json.dumps(greeting, separators=(",", ":"))}
            while True:
                event_id, data = await queue.get()
                yield {"id": event_id, "data": data}
        finally:
            fanout.remove(channel, queue)

    return EventSourceResponse(events(), ping=KEEPALIVE, sep="\n", headers={"Cache-Control": "no-cache"})


async def ready(request: Request) -> Response:
    status = 200 if fanout.ready else 503
    return JSONResponse({"status": "ready" if fanout.ready else "starting"}, status_code=status)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    task = asyncio.create_task(fanout.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await redis.aclose()


app = Starlette(
    routes=[
        Route("/api/v1/sse/jobs/my", stream),
        Route("/api/v1/sse/jobs/{job_type}/{job_id}", stream),
        Route("/readyz", ready),
    ],
    lifespan=lifespan,
)

if __name__ == "__main__":
    # Plain asyncio and h11, as a `pip install uvicorn` gets; the hub runs
    # on the plain asyncio loop too.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ.get("HUB_PORT", "8089")),
        loop="asyncio",
        http="h11",
        log_level="warning",
        access_log=False,
    )
