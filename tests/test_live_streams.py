"""The live phase of an SSE stream, where the hub writes each event straight
to the client's socket: the framing is right for HTTP/1.0 and HTTP/1.1, and a
client that pauses gets everything once and in order when it reads again."""

from __future__ import annotations

import asyncio
import socket

import pytest

from hub.store.journal import Journal
from tests.support.http import read_response
from tests.support.sse import parse_events

pytestmark = pytest.mark.gen_test(timeout=120)

PAYLOAD = "y" * 8000


async def open_socket(
    port: int, receive_buffer: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def test_an_http_1_0_client_gets_an_unchunked_stream_that_ends_with_the_job(
    hub_process, settings, sync_redis, token
):
    hub = hub_process()
    journal = Journal(sync_redis, settings)
    journal.create("plain", "old", "character")
    reader, writer = await open_socket(hub.port)
    writer.write(
        f"GET /api/v1/sse/jobs/character/plain HTTP/1.0\r\nAuthorization: Bearer {token('old')}\r\n\r\n".encode()
    )
    response = await read_response(reader, writer, timeout=10)
    assert response.status == 200 and "transfer-encoding" not in response.headers
    await reader.readuntil(b"initial_status")
    ids = [journal.update("plain", "old", "character", status="active", progress=p)[0].decode() for p in (10, 20)]
    ids.append(journal.update("plain", "old", "character", status="completed", progress=100, result={})[0].decode())
    # HTTP/1.0 has no chunks: the body is the frames themselves, and it ends
    # when the hub closes the connection after the terminal event.
    body = (await asyncio.wait_for(reader.read(), 10)).decode()
    frames = parse_events(body)
    assert [f.id for f in frames if f is not None and f.id] == ids
    writer.close()


async def test_a_paused_client_gets_every_event_once_and_in_order_when_it_reads_again(
    hub_process, settings, sync_redis, token
):
    # Room for every event in the client's queue, and time: the client is
    # slow, not stuck, so it must not be dropped.
    hub = hub_process(HUB_SUBSCRIBER_QUEUE="1000", HUB_WRITE_TIMEOUT_SECONDS="60")
    journal = Journal(sync_redis, settings)
    journal.create("burst", "pauser", "character")
    reader, writer = await open_socket(hub.port, receive_buffer=4096)
    writer.write(
        f"GET /api/v1/sse/jobs/character/burst HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token('pauser')}\r\n\r\n".encode()
    )
    response = await read_response(reader, writer, timeout=10)
    assert response.headers["transfer-encoding"] == "chunked"
    first = await response.frame()
    while first is not None and first.type != "initial_status":
        first = await response.frame()

    # ~7 MB while the client reads nothing: more than the sockets hold
    # (the kernel lets a send buffer grow to 4 MB), so the hub must queue the
    # rest and send it when they drain.
    ids = [
        journal.update("burst", "pauser", "character", progress=n // 9, note=PAYLOAD)[0].decode() for n in range(900)
    ]
    ids.append(journal.update("burst", "pauser", "character", status="completed", progress=100)[0].decode())

    frames = await response.frames_until_end(timeout=30)
    assert [f.id for f in frames] == ids
    assert hub.metric("hub_slow_consumers_disconnected_total") == 0
    writer.close()


# History keeps all 1,602 events: what a replay trimmed under it does is
# test_hardening_history.py's (a reset, since a stream holds one page).
@pytest.mark.hub_settings(job_history=2_000)
async def test_events_that_arrive_while_a_slow_client_takes_its_replay_all_follow_it(
    hub_process, settings, sync_redis, token
):
    hub = hub_process(HUB_SUBSCRIBER_QUEUE="1000", HUB_WRITE_TIMEOUT_SECONDS="60")
    journal = Journal(sync_redis, settings)
    first = journal.create("catchup", "late", "character")[0].decode()
    # ~7 MB of history after the client's cursor: its replay cannot all go
    # to the kernel while the client reads nothing.
    ids = [
        journal.update("catchup", "late", "character", progress=n // 9, note=PAYLOAD)[0].decode() for n in range(900)
    ]
    reader, writer = await open_socket(hub.port, receive_buffer=4096)
    writer.write(
        f"GET /api/v1/sse/jobs/character/catchup HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {first}\r\n"
        f"Authorization: Bearer {token('late')}\r\n\r\n".encode()
    )
    response = await read_response(reader, writer, timeout=10)
    greeting = await response.frame()
    while greeting is not None and greeting.type != "connected":
        greeting = await response.frame()
    # The replay follows the greeting, and stalls on the full socket.
    # Meanwhile, more than one batch of live events waits for the replay to end.
    ids += [journal.update("catchup", "late", "character", progress=100)[0].decode() for _ in range(700)]
    ids.append(journal.update("catchup", "late", "character", status="completed", progress=100)[0].decode())

    frames = await response.frames_until_end(timeout=30)
    assert [f.id for f in frames] == ids
    assert hub.metric("hub_slow_consumers_disconnected_total") == 0
    writer.close()
