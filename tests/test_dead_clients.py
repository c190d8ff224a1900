"""Clients that never finish their request (slowloris) or vanish without a
goodbye cost bounded memory and are dropped in bounded time."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from tests.support.environment import need
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=120)

SLOW_CLIENTS = 200


async def trickle(port: int, connected: list[int], closed_after: list[float]) -> None:
    """Sends a request's headers one byte at a time, never finishing them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /api/v1/sse/jobs/my HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    connected.append(1)
    try:
        for _ in range(200):  # at most ~40 s, far beyond the hub's bound
            writer.write(b"a")
            await writer.drain()
            if await _closed_within(reader, 0.2):
                closed_after.append(time.monotonic() - started)
                return
    except (ConnectionResetError, BrokenPipeError):
        closed_after.append(time.monotonic() - started)
    finally:
        writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1024), seconds)
    except TimeoutError:
        return False
    return data == b"" or data.startswith(b"HTTP/1.1 4")


async def test_slowloris_clients_are_dropped_in_bounded_time(hub_process):
    hub = hub_process(HUB_REQUEST_TIMEOUT_SECONDS="1")
    baseline = hub.rss_bytes()
    connected: list[int] = []
    closed_after: list[float] = []
    slow = [asyncio.create_task(trickle(hub.port, connected, closed_after)) for _ in range(SLOW_CLIENTS)]
    await eventually(lambda: len(connected) == SLOW_CLIENTS)

    # Meanwhile the hub serves everyone else.
    started = time.monotonic()
    with urllib.request.urlopen(hub.url + "/healthz", timeout=5) as answer:
        assert answer.status == 200
    healthy_in = time.monotonic() - started
    peak = hub.rss_bytes()

    await asyncio.gather(*slow)
    assert len(closed_after) == SLOW_CLIENTS, "every slow client was dropped"
    print(
        f"{SLOW_CLIENTS} slowloris clients: dropped after {min(closed_after):.2f}-{max(closed_after):.2f}s "
        f"(HUB_REQUEST_TIMEOUT_SECONDS=1); /healthz answered in {healthy_in * 1000:.1f} ms meanwhile; "
        f"RSS +{(peak - baseline) / 2**20:.2f} MiB"
    )
    assert max(closed_after) < 10
    assert peak - baseline < 20 * 2**20


CLIENT = """
import socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
head = "GET /api/v1/sse/jobs/my HTTP/1.1\\r\\nHost: hub\\r\\nAuthorization: Bearer " + sys.argv[3]
sock.sendall((head + "\\r\\n\\r\\n").encode())
seen = b""
while b"connected" not in seen:
    seen += sock.recv(4096)
print("ready", flush=True)
sys.stdin.read()  # holds the connection until killed
"""


@pytest.fixture
def client_host():
    """A separate network namespace joined to this one by a veth pair: a test
    host of our own whose network we can pull, so a client vanishes without
    its machine ever sending a FIN or a reset."""
    need(os.geteuid() == 0 and shutil.which("ip") is not None, "needs root and iproute2 for a network namespace")
    tag = uuid.uuid4().hex[:6]
    name, host_if, client_if = f"hubt{tag}", f"vh{tag}", f"vc{tag}"
    subnet = random.randint(1, 250)
    host_ip, client_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"

    def ip(*args: str, netns: str | None = None) -> None:
        prefix = ["ip", "netns", "exec", netns] if netns else []
        subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as error:
        need(False, f"cannot create a network namespace: {error.stderr.decode().strip()}")
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", client_if)
        ip("link", "set", client_if, "netns", name)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("addr", "add", f"{client_ip}/30", "dev", client_if, netns=name)
        ip("link", "set", client_if, "up", netns=name)
        yield {"netns": name, "host_ip": host_ip, "cut": lambda: ip("link", "set", client_if, "down", netns=name)}
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


async def test_a_client_that_vanishes_without_a_fin_is_dropped_in_bounded_time(hub_process, client_host, token):
    hub = hub_process(HUB_HOST=client_host["host_ip"], HUB_DEAD_CLIENT_SECONDS="2", HUB_KEEPALIVE_SECONDS="1")
    client = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            client_host["netns"],
            sys.executable,
            "-c",
            CLIENT,
            client_host["host_ip"],
            str(hub.port),
            token("ghost"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert client.stdout.readline().strip() == b"ready"
        await eventually(lambda: hub.metric("hub_connections", transport="sse") == 1)
        client_host["cut"]()  # the client's network is gone: nothing it sends arrives any more
        client.kill()
        vanished_at = time.monotonic()
        await eventually(lambda: hub.metric("hub_connections", transport="sse") == 0, timeout=60, interval=0.2)
        print(
            f"vanished client dropped {time.monotonic() - vanished_at:.1f}s after it disappeared "
            "(HUB_KEEPALIVE_SECONDS=1, HUB_DEAD_CLIENT_SECONDS=2)"
        )
    finally:
        client.kill()
        client.wait()
