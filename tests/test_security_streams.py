"""Credentials on long-lived connections: a stream does not outlive its
token, stream tickets open streams (and nothing else) for their user only,
and neither tokens nor tickets ever reach the logs."""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import Any

import jwt
import pytest

from hub.store.events import parse_cursor
from hub.web.auth import Identity
from hub.web.tickets import Tickets
from tests.support.http import Response, bearer, request
from tests.support.tokens import SECRET
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=30)

TICKETS = "/api/v1/sse/tickets"


def token_expiring_in(seconds: float, user: str = "alice") -> tuple[str, int]:
    """A token whose `exp` is `seconds` (rounded up) from now, and that exp."""
    exp = math.ceil(time.time() + seconds)
    return jwt.encode({"sub": user, "exp": exp}, SECRET, algorithm="HS256"), exp


async def opened(url: str, headers: dict[str, str] | None = None) -> Response:
    """An SSE stream past its `retry` and `connected` frames."""
    stream = await request(url, headers=headers)
    assert stream.status == 200, await stream.body()
    assert (await stream.frame()).retry is not None
    assert (await stream.frame()).type == "connected"
    return stream


async def json_answer(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, Any]:
    response = await request(url, method, headers, body if body is not None else b"" if method == "POST" else None)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response.status, await response.json_body()


async def new_ticket(hub_url: str, token: str, path: str | None = None) -> dict[str, Any]:
    """A ticket of `token`'s user, bound to the stream of `path` if given."""
    if path is None:
        status, body = await json_answer(hub_url + TICKETS, "POST", bearer(token))
    else:
        headers = {**bearer(token), "Content-Type": "application/json"}
        status, body = await json_answer(hub_url + TICKETS, "POST", headers, json.dumps({"path": path}).encode())
    assert status == 201, body
    return body


# A stream does not outlive its token ---------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/sse/jobs/character/j1", "/api/v1/sse/jobs/my"])
async def test_an_sse_stream_ends_with_token_expired_and_resumes_with_a_fresh_token(ctx, hub_url, token, path):
    await ctx.journal.create("j1", "alice", "character")
    short, exp = token_expiring_in(2)
    stream = await opened(hub_url + path, bearer(short))
    assert (await stream.frame()).type == "initial_status"
    await ctx.journal.update("j1", "alice", "character", status="active", progress=10)
    live = await stream.frame()
    assert (live.data["type"], live.data["progress"]) == ("job_update", 10)

    expired = await stream.frame(timeout=10)
    ended_at = time.time()
    assert expired.type == "token_expired" and expired.id is None and expired.data["message"]
    assert exp - 0.1 <= ended_at <= exp + 1.5
    assert await stream.frame() is None, "the stream must end after token_expired"

    # Meanwhile the job goes on; a fresh token and the last id miss nothing.
    await ctx.journal.update("j1", "alice", "character", status="active", progress=40, step="traits")
    await ctx.journal.update("j1", "alice", "character", status="completed", progress=100, result={"name": "Ada"})
    resumed = await opened(hub_url + path, {**bearer(token("alice")), "Last-Event-ID": live.id})
    frames = [await resumed.frame(), await resumed.frame()]
    assert [(f.data["status"], f.data["progress"]) for f in frames] == [("active", 40), ("completed", 100)]
    assert parse_cursor(frames[0].id) > parse_cursor(live.id)
    resumed.close()


async def test_a_held_long_poll_is_answered_when_its_token_expires(ctx, hub_url, token):
    await ctx.journal.create("j1", "alice", "character")
    url = hub_url + "/api/v1/poll/jobs/character/j1"
    short, exp = token_expiring_in(2)
    status, first = await json_answer(url, headers=bearer(short))
    assert status == 200
    cursor = first["cursor"]

    # Held (the poll timeout is 25 s) until the token expires, not longer.
    status, held = await json_answer(f"{url}?cursor={cursor}", headers=bearer(short))
    answered_at = time.time()
    assert (status, held) == (200, {"events": [], "cursor": cursor})
    assert exp - 0.1 <= answered_at <= exp + 1.0

    # The next poll with that token is refused, so the client renews it
    # (instead of polling in a loop until the leeway runs out).
    status, refused = await json_answer(f"{url}?cursor={cursor}", headers=bearer(short))
    assert (status, refused["error"], refused["message"]) == (401, "unauthorized", "token expired")

    await ctx.journal.update("j1", "alice", "character", status="active", progress=25)
    await ctx.journal.update("j1", "alice", "character", status="active", progress=50)
    status, resumed = await json_answer(f"{url}?cursor={cursor}", headers=bearer(token("alice")))
    assert status == 200
    assert [event["progress"] for event in resumed["events"]] == [25, 50]


async def test_streams_refuse_a_token_past_its_exp_even_within_the_leeway(ctx, hub_url):
    await ctx.journal.create("j1", "alice", "character")
    stale, _ = token_expiring_in(-2)
    for path in (
        "/api/v1/sse/jobs/my",
        "/api/v1/sse/jobs/character/j1",
        "/api/v1/poll/jobs/my",
        "/api/v1/poll/jobs/character/j1?cursor=0-0",
    ):
        status, body = await json_answer(hub_url + path, headers=bearer(stale))
        assert (status, body["error"], body["message"]) == (401, "unauthorized", "token expired"), path
    # Nor does it buy a ticket for them.
    status, body = await json_answer(hub_url + TICKETS, "POST", bearer(stale))
    assert (status, body["message"]) == (401, "token expired")


# Stream tickets -----------------------------------------------------------------------


async def test_a_ticket_is_issued_for_a_bearer_header_only(ctx, hub_url, token):
    alice = token("alice")
    response = await request(hub_url + TICKETS, "POST", bearer(alice), b"")
    assert response.status == 201
    assert response.headers["cache-control"] == "no-store"
    body = await response.json_body()
    assert set(body) == {"ticket", "expiresIn"}
    assert isinstance(body["ticket"], str) and len(body["ticket"]) >= 32
    assert 0 < body["expiresIn"] <= 60

    for headers, url in (
        ({}, f"{hub_url}{TICKETS}?access_token={alice}"),
        ({"Cookie": f"hub_token={alice}"}, hub_url + TICKETS),
        ({}, hub_url + TICKETS),
        ({"Authorization": f"Basic {alice}"}, hub_url + TICKETS),
        (bearer("not-a-jwt"), hub_url + TICKETS),
        ({}, f"{hub_url}{TICKETS}?ticket={body['ticket']}"),  # no ticket from a ticket
    ):
        status, refused = await json_answer(url, "POST", headers)
        assert (status, refused["error"]) == (401, "unauthorized"), (url, headers)


async def test_a_ticket_never_outlives_its_token(ctx, hub_url):
    short, exp = token_expiring_in(2)
    ticket = await new_ticket(hub_url, short)
    assert ticket["expiresIn"] <= exp - time.time() + 1
    await ctx.journal.create("j1", "alice", "character")
    stream = await opened(f"{hub_url}/api/v1/sse/jobs/character/j1?ticket={ticket['ticket']}")
    assert (await stream.frame()).type == "initial_status"
    assert (await stream.frame(timeout=10)).type == "token_expired"
    assert await stream.frame() is None


async def test_a_ticket_opens_streams_and_polls_for_its_user_only(ctx, hub_url, token):
    await ctx.journal.create("mine", "alice", "character")
    await ctx.journal.create("theirs", "bob", "character")
    alice = token("alice")

    # An unbound ticket opens any one of the user's streams, once.
    ticket = (await new_ticket(hub_url, alice))["ticket"]
    stream = await opened(f"{hub_url}/api/v1/sse/jobs/character/mine?ticket={ticket}")
    assert (await stream.frame()).data["jobId"] == "mine"
    await ctx.journal.update("mine", "alice", "character", status="active", progress=30)
    assert (await stream.frame()).data["progress"] == 30
    stream.close()
    status, body = await json_answer(f"{hub_url}/api/v1/sse/jobs/my?ticket={ticket}")
    assert (status, body["error"]) == (401, "unauthorized"), "an unbound ticket is used up by its first stream"

    my = await opened(f"{hub_url}/api/v1/sse/jobs/my?ticket={(await new_ticket(hub_url, alice))['ticket']}")
    assert (await my.frame()).data["jobId"] == "mine"
    await ctx.journal.update("theirs", "bob", "character", status="active", progress=1)
    await ctx.journal.update("mine", "alice", "character", status="active", progress=60)
    assert (await my.frame()).data["jobId"] == "mine"
    my.close()

    # A ticket bound to a stream opens its SSE and long-poll paths, again and again.
    bound = (await new_ticket(hub_url, alice, "/api/v1/sse/jobs/character/mine"))["ticket"]
    for _ in range(2):
        status, polled = await json_answer(f"{hub_url}/api/v1/poll/jobs/character/mine?ticket={bound}")
        assert status == 200 and polled["events"][0]["progress"] == 60
        stream = await opened(f"{hub_url}/api/v1/sse/jobs/character/mine?ticket={bound}")
        assert (await stream.frame()).data["progress"] == 60
        stream.close()

    # Another user's streams: not found, whichever ticket (each unbound one fresh).
    for path in ("/api/v1/sse/jobs/character/theirs", "/api/v1/poll/jobs/character/theirs"):
        fresh = (await new_ticket(hub_url, alice))["ticket"]
        status, body = await json_answer(f"{hub_url}{path}?ticket={fresh}")
        assert (status, body["error"]) == (404, "not_found"), path
    # Nor does a ticket bound to one of them let alice in.
    theirs = (await new_ticket(hub_url, alice, "/api/v1/sse/jobs/character/theirs"))["ticket"]
    status, body = await json_answer(f"{hub_url}/api/v1/sse/jobs/character/theirs?ticket={theirs}")
    assert (status, body["error"]) == (404, "not_found")


async def test_a_ticket_opens_nothing_but_streams(ctx, hub_url, token):
    await ctx.journal.create("mine", "alice", "character")
    ticket = (await new_ticket(hub_url, token("alice")))["ticket"]
    for method, path in (
        ("GET", "/api/v1/characters/jobs/mine"),
        ("POST", "/api/v1/characters"),
        ("GET", "/api/v1/media/jobs/mine/image.png"),
    ):
        status, body = await json_answer(f"{hub_url}{path}?ticket={ticket}", method)
        assert (status, body["error"]) == (401, "unauthorized"), path


async def test_unknown_malformed_and_expired_tickets_are_refused(ctx, hub_url, token, sync_redis, namespace):
    await ctx.journal.create("j1", "alice", "character")
    sse = hub_url + "/api/v1/sse/jobs/character/j1?ticket="
    poll = hub_url + "/api/v1/poll/jobs/character/j1?ticket="

    async def refused(ticket: str) -> bool:
        statuses = []
        for url in (sse, poll):
            response = await request(url + ticket)
            if response.status == 401:
                assert (await response.json_body())["error"] == "unauthorized"
            response.close()
            statuses.append(response.status)
        return statuses == [401, 401]

    # Bound to j1: it opens both paths as long as it lives.
    good = (await new_ticket(hub_url, token("alice"), "/api/v1/sse/jobs/character/j1"))["ticket"]
    for ticket in (
        secrets.token_urlsafe(32),  # well-formed, never issued
        "abc",
        good + "A",
        good[:-1],
        good[:-1] + "!",
        good.upper() if good.upper() != good else good.lower(),
        token("alice"),  # a token is not a ticket
    ):
        assert await refused(ticket), ticket

    # Revoked: its record is gone from Redis.
    for url in (sse, poll):
        response = await request(url + good)
        assert response.status == 200, url
        response.close()
    for key in sync_redis.scan_iter(match=f"{namespace}:ticket:*"):
        sync_redis.delete(key)
    assert await refused(good)

    # Expired.
    tickets = Tickets(ctx.redis, ctx.keys, ttl=1)
    short_lived, ttl = await tickets.issue(Identity("alice", time.time() + 600), "jobs/character/j1")
    assert ttl == 1
    await eventually(lambda: refused(short_lived), timeout=5, interval=0.1)


# Nothing secret in the logs -----------------------------------------------------------


async def test_tokens_and_tickets_never_reach_the_logs(ctx, hub_url, token, caplog, monkeypatch):
    caplog.set_level("DEBUG")
    await ctx.journal.create("j1", "alice", "character")
    alice = token("alice")
    # Bound to `/my`: it opens that stream's paths as often as asked.
    ticket = (await new_ticket(hub_url, alice, "/api/v1/sse/jobs/my"))["ticket"]
    unbound = (await new_ticket(hub_url, alice))["ticket"]
    secrets_in_urls = {"token": alice.split(".")[2], "ticket": ticket[:16], "unbound ticket": unbound[:16]}

    async def visit(path: str, method: str = "GET") -> int:
        response = await request(hub_url + path, method, body=b"{}" if method == "POST" else None)
        status = response.status
        response.close()
        return status

    expected = {
        f"/api/v1/sse/jobs/character/j1?access_token={alice}": 200,
        f"/api/v1/sse/jobs/my?ticket={ticket}": 200,
        f"/api/v1/poll/jobs/character/j1?access_token={alice}": 200,
        f"/api/v1/poll/jobs/my?ticket={ticket}&cursor=0-0": 200,
        f"/api/v1/characters/jobs/j1?access_token={alice}": 200,
        f"/api/v1/characters/jobs/nope?access_token={alice}": 404,
        f"/api/v1/nothing-here?access_token={alice}": 404,
        f"/api/v1/poll/jobs/my?access_token={alice}&cursor=abc": 400,
        f"/api/v1/sse/jobs/my?ticket={ticket}x": 401,
        f"/api/v1/sse/jobs/my?access_token={alice}x": 401,
        # Invalid UTF-8 after the secret: Tornado's error would quote the value.
        f"/api/v1/sse/jobs/my?ticket={ticket}%ff": 400,
        f"/api/v1/sse/jobs/my?access_token={alice}%ff": 400,
    }
    for path, status in expected.items():
        assert await visit(path) == status, path

    # An unexpected failure, which is logged with its traceback.
    async def broken(job_id: str) -> None:
        raise RuntimeError("the store misbehaved")

    monkeypatch.setattr(ctx.history, "job", broken)
    assert await visit(f"/api/v1/characters/jobs/j1?access_token={alice}") == 500
    assert await visit(f"/api/v1/sse/jobs/character/j1?ticket={unbound}") == 500
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records), "the failure should be logged"

    for name, secret in secrets_in_urls.items():
        assert secret not in caplog.text, f"a {name} reached the logs"
    # The access log names each request by its path, without the query.
    access = [r.getMessage() for r in caplog.records if r.name == "hub.access"]
    assert len(access) >= len(expected) + 2
    assert not any("?" in line or "access_token" in line or "ticket=" in line for line in access)
    assert any("/api/v1/sse/jobs/my" in line for line in access)
