"""Bad input of every kind is a clear 4xx in the contract's JSON, and none of
it disturbs the hub: another user's open stream keeps receiving events.

Field-by-field validation of job bodies is in tests/test_jobs_api.py."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.bodies import BAD_BODIES
from tests.support.http import DEFAULT_TIMEOUT, Response, request
from tests.support.metrics import sample

pytestmark = pytest.mark.gen_test(timeout=60)

MIB = 1024 * 1024


class Bystander:
    """Bob, whose `/my` stream must keep working whatever others send."""

    def __init__(self, ctx: Any, stream: Response) -> None:
        self.ctx = ctx
        self.stream = stream
        self.progress = 0

    @classmethod
    async def watching(cls, ctx: Any, api: Any) -> Bystander:
        await ctx.journal.create("bobs-job", "bob", "character")
        stream = await api("bob").stream("/api/v1/sse/jobs/my")
        assert stream.status == 200
        assert [(await stream.frame()).retry is not None, (await stream.frame()).type] == [True, "connected"]
        assert (await stream.frame()).type == "initial_status"
        return cls(ctx, stream)

    async def still_served(self, hub_url: str) -> None:
        self.progress += 1
        await self.ctx.journal.update("bobs-job", "bob", "character", status="active", progress=self.progress)
        frame = await self.stream.frame(timeout=5)
        assert (frame.data["jobId"], frame.data["progress"]) == ("bobs-job", self.progress)
        health = await request(hub_url + "/healthz")
        assert (health.status, await health.json_body()) == (200, {"status": "ok"})


async def json_error(response: Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = await response.json_body()
    assert isinstance(body["error"], str)
    return body


def no_crash_logged(caplog: pytest.LogCaptureFixture) -> None:
    crashes = [r for r in caplog.records if r.levelname == "ERROR" and r.name != "hub.access"]
    assert not crashes, [r.getMessage() for r in crashes]


async def post_big(url: str, headers: dict[str, str], size: int, *, chunked: bool = False) -> Answer:
    """POSTs `size` bytes while reading the answer: the hub may answer (and
    hang up) before the body is through. A plain socket in a thread, because
    asyncio's reader gives up what it has received once a write fails."""
    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()

    def exchange() -> bytes:
        received = bytearray()
        with socket.create_connection((parts.hostname, parts.port), timeout=DEFAULT_TIMEOUT) as sock:
            sock.sendall(head)
            piece = b" " * 65536
            sent = 0
            try:
                while sent < size:
                    data = piece[: size - sent]
                    sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                    sent += len(data)
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the hub answered and hung up
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except OSError:
                pass  # a reset after the answer
        return bytes(received)

    raw = await asyncio.to_thread(exchange)
    head_part, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    length = int(answer_headers.get("content-length", len(body)))
    return Answer(int(status_line.split()[1]), answer_headers, body[:length])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"].startswith("application/json"), self.headers
        return json.loads(self.body)


# Size ---------------------------------------------------------------------------------


async def test_oversized_bodies_are_413_json(ctx, api, hub_url, token, caplog):
    bob = await Bystander.watching(ctx, api)
    headers = {"Authorization": f"Bearer {token('alice')}", "Content-Type": "application/json"}
    for path in ("/api/v1/characters", "/api/v1/media/images"):
        for size, chunked in ((20 * 1024, False), (20 * 1024, True), (2 * MIB, False), (2 * MIB, True)):
            answer = await post_big(hub_url + path, headers, size, chunked=chunked)
            assert answer.status == 413, (path, size, chunked)
            assert answer.json()["error"] == "payload_too_large"
        await bob.still_served(hub_url)
    # Refusing a body is an answer, not a crash.
    no_crash_logged(caplog)


async def test_a_real_server_answers_a_2_mib_body_with_413(hub_process, token):
    # `hub serve` reads at most 1 MiB of any body; the hub must answer first.
    hub = hub_process()
    headers = {"Authorization": f"Bearer {token('alice')}", "Content-Type": "application/json"}
    for chunked in (False, True):
        answer = await post_big(hub.url + "/api/v1/characters", headers, 2 * MIB, chunked=chunked)
        assert answer.status == 413, chunked
        assert answer.json()["error"] == "payload_too_large"
    health = await request(hub.url + "/readyz")
    assert health.status == 200


async def test_oversized_headers_are_431_json(ctx, api, hub_url, token):
    bob = await Bystander.watching(ctx, api)
    alice = {"Authorization": f"Bearer {token('alice')}"}
    many = {f"X-Filler-{n}": "y" * 200 for n in range(100)}
    for method, path in (
        ("GET", "/api/v1/sse/jobs/my"),
        ("GET", "/api/v1/poll/jobs/my"),
        ("GET", "/api/v1/characters/jobs/x"),
        ("POST", "/api/v1/characters"),
        ("POST", "/api/v1/sse/tickets"),
    ):
        for headers in ({**alice, "X-Filler": "x" * 20 * 1024}, {**alice, **many}):
            response = await request(hub_url + path, method, headers, b"{}" if method == "POST" else None)
            assert response.status == 431, path
            assert (await json_error(response))["error"] == "headers_too_large"
    assert ctx.connections.total == 1  # bob's
    await bob.still_served(hub_url)


# Content ------------------------------------------------------------------------------


async def test_bad_job_bodies_leave_the_hub_serving_others(ctx, api, hub_url, token, caplog):
    bob = await Bystander.watching(ctx, api)
    headers = {"Authorization": f"Bearer {token('alice')}", "Content-Type": "application/json"}
    raw_bodies = [
        b"[" * 16_000,  # deeper than the JSON parser goes
        b'{"name": ' * 1_500 + b"1" + b"}" * 1_500,
        b'{"name": "\\ud800"}',  # a lone surrogate: not text
        b'{"name": "Ada", "description": NaN}',
        b'{"name": "Ada"} {"name": "Eve"}',
        b'{"prompt": "fox", "width": 1e999}',
        b'{"prompt": "fox", "width": ' + b"9" * 5_000 + b"}",
        b"\x00\x01\x02",
    ]
    raw_bodies += [json.dumps(body).encode() for cases in BAD_BODIES.values() for body, _ in cases]
    for path in ("/api/v1/characters", "/api/v1/media/images"):
        for body in raw_bodies:
            response = await request(hub_url + path, "POST", headers, body)
            assert response.status == 400, (path, body[:40], response.status)
            assert (await json_error(response))["error"] == "bad_request"
    await bob.still_served(hub_url)
    no_crash_logged(caplog)


# Paths --------------------------------------------------------------------------------


async def test_unknown_job_types_are_404_in_every_path_family(ctx, api, hub_url, token):
    bob = await Bystander.watching(ctx, api)
    await ctx.journal.create("j1", "alice", "character")
    alice = {"Authorization": f"Bearer {token('alice')}"}
    for method, path in (
        ("GET", "/api/v1/sse/jobs/video/x"),
        ("GET", "/api/v1/poll/jobs/video/x"),
        ("GET", "/api/v1/video/jobs/x"),
        ("GET", "/api/v1/sse/jobs/video/j1"),
        ("GET", "/api/v1/poll/jobs/video/j1"),
        ("GET", "/api/v1/video/jobs/j1"),
        ("GET", "/api/v1/sse/jobs/Character/j1"),
        ("GET", "/api/v1/sse/jobs/characters/j1"),
        ("GET", "/api/v1/characters/jobs/j1/image.png"),
        ("GET", "/api/v1/sse/jobs/character/j1/extra"),
        ("POST", "/api/v1/videos"),
        ("POST", "/api/v1/media/videos"),
    ):
        response = await request(hub_url + path, method, alice, b"{}" if method == "POST" else None)
        assert response.status == 404, path
        assert (await json_error(response))["error"] == "not_found"
    await bob.still_served(hub_url)


TRICK_IDS = [
    "..%2F..%2Fetc%2Fpasswd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "..",
    ".",
    "%2e%2e",
    "%00",
    "j1%00",
    "j1%2F",
    "j1%20",
    "j1%0d%0aX-Injected:%201",
    "j1*",
    "*",
    "j1%3F",
    "J1",
    "j1;x",
    "j1%E2%80%A8",
    "a" * 65,
    "a" * 10_000,
]


@pytest.mark.parametrize("job_id", TRICK_IDS, ids=lambda job_id: job_id[:30])
async def test_job_ids_with_path_tricks_are_404(ctx, hub_url, token, job_id):
    await ctx.journal.create("j1", "alice", "character")
    await ctx.journal.create("a" * 64, "alice", "media")
    alice = {"Authorization": f"Bearer {token('alice')}"}
    for template in (
        "/api/v1/sse/jobs/character/{}",
        "/api/v1/poll/jobs/character/{}",
        "/api/v1/characters/jobs/{}",
        "/api/v1/sse/jobs/media/{}",
        "/api/v1/media/jobs/{}",
        "/api/v1/media/jobs/{}/image.png",
    ):
        response = await request(hub_url + template.format(job_id), headers=alice)
        assert response.status == 404, template
        assert "x-injected" not in response.headers
        assert await json_error(response) == {"error": "not_found", "message": "no such job"}, template
    # Refused streams and polls are counted for the operators.
    assert sample(ctx, "hub_connections_rejected_total", reason="not_found") == 3


MALFORMED_CURSORS = [
    "abc",
    "1-2-3",
    "-1",
    "1-",
    "-",
    "1.5-0",
    "0x10-0",
    "%D9%A1-%D9%A2",  # Arabic-Indic digits
    "18446744073709551616-0",  # beyond Redis's 64 bits
    "0-99999999999999999999",
    "1" * 21 + "-0",
]


async def test_malformed_cursors_are_400(ctx, api, hub_url, token):
    bob = await Bystander.watching(ctx, api)
    await ctx.journal.create("j1", "alice", "character")
    alice = {"Authorization": f"Bearer {token('alice')}"}
    for cursor in MALFORMED_CURSORS:
        for path, headers in (
            (f"/api/v1/poll/jobs/character/j1?cursor={cursor}", alice),
            (f"/api/v1/poll/jobs/my?cursor={cursor}", alice),
            (f"/api/v1/sse/jobs/character/j1?lastEventId={cursor}", alice),
            (f"/api/v1/sse/jobs/my?lastEventId={cursor}", alice),
        ):
            response = await request(hub_url + path, headers=headers)
            assert response.status == 400, path
            body = await json_error(response)
            assert body["error"] == "bad_request" and "cursor" in body["message"], path
    for header in ("1-2-3", "abc", "-1", "18446744073709551616-0", "0-99999999999999999999"):
        for path in ("/api/v1/sse/jobs/character/j1", "/api/v1/sse/jobs/my"):
            response = await request(hub_url + path, headers={**alice, "Last-Event-ID": header})
            assert response.status == 400, (path, header)
            assert (await json_error(response))["error"] == "bad_request"
    assert ctx.connections.count("alice") == 0
    await bob.still_served(hub_url)


# Rate ---------------------------------------------------------------------------------


@pytest.mark.hub_settings(job_rate_per_minute=3)
async def test_job_creation_is_rate_limited_per_user(ctx, api, hub_url):
    bob = await Bystander.watching(ctx, api)
    for user in ("alice", "carol"):
        client = api(user)
        window = int(time.time() // 60)
        # Refused bodies start no job and do not count.
        assert (await client.post("/api/v1/characters", {"name": ""}))[0] == 400
        statuses = [
            (await client.post("/api/v1/characters", {"name": "Ada"}))[0],
            (await client.post("/api/v1/media/images", {"prompt": "fox"}))[0],
            (await client.post("/api/v1/characters", {"name": "Eve"}))[0],
        ]
        fourth = await request(
            hub_url + "/api/v1/media/images",
            "POST",
            client.auth({"Content-Type": "application/json"}),
            json.dumps({"prompt": "owl"}).encode(),
        )
        if int(time.time() // 60) != window:
            continue  # a new minute began meanwhile: once more, with another user
        assert statuses == [202, 202, 202]
        assert fourth.status == 429
        body = await json_error(fourth)
        assert body == {"error": "rate_limited", "message": body["message"], "limit": 3} and body["message"]
        assert 1 <= int(fourth.headers["retry-after"]) <= 60
        break
    else:
        pytest.fail("two minute boundaries in a few milliseconds")

    # Another user is not held back.
    status, created = await api("dave").post("/api/v1/characters", {"name": "Grace"})
    assert status == 202 and created["status"] == "queued"
    await bob.still_served(hub_url)
