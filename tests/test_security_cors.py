"""CORS: only configured origins, never `*`, on successes and errors alike
(a browser cannot read an error without the headers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import pytest

from hub.errors import RateLimited
from tests.support.http import DEFAULT_TIMEOUT, Response, send

pytestmark = pytest.mark.gen_test(timeout=30)

APP = "https://app.example"
CORS = pytest.mark.hub_settings(cors_origins=(APP,))
OTHER_ORIGINS = [
    "https://evil.example",
    "http://app.example",
    "https://app.example.evil.example",
    "https://evil-app.example",
    "https://app.example:8443",
    "https://app.example/",
    "null",
    "*",
]


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    def one(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    def tokens(self, name: str) -> set[str]:
        return {part.strip().lower() for value in self.all(name) for part in value.split(",") if part.strip()}

    def cors(self) -> dict[str, str]:
        return {key: value for key, value in self.headers if key.startswith("access-control-")}

    def json(self) -> Any:
        return json.loads(self.body)


async def ask(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None
) -> Answer:
    """Every header line as sent (repeats included); a stream's body is not read."""
    sent = await send(url, method, headers, body)
    status_line = await asyncio.wait_for(sent.reader.readline(), DEFAULT_TIMEOUT)
    lines: list[tuple[str, str]] = []
    while (line := await asyncio.wait_for(sent.reader.readline(), DEFAULT_TIMEOUT)) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        lines.append((name.strip().lower(), value.strip()))
    response = Response(int(status_line.split()[1]), dict(lines), sent.reader, sent.writer)
    streaming = response.headers.get("content-type", "").startswith("text/event-stream")
    content = b"" if streaming else await response.body()
    response.close()
    answer = Answer(response.status, lines, content)
    assert "*" not in answer.all("access-control-allow-origin"), "the hub must never allow every origin"
    return answer


def preflight_headers(origin: str, method: str = "GET", extra: str = "") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, last-event-id" + extra,
    }


PREFLIGHTS = [
    ("GET", "/api/v1/sse/jobs/my"),
    ("GET", "/api/v1/sse/jobs/character/j1"),
    ("GET", "/api/v1/poll/jobs/media/j1"),
    ("GET", "/api/v1/characters/jobs/j1"),
    ("POST", "/api/v1/characters"),
    ("POST", "/api/v1/sse/tickets"),
]


@CORS
@pytest.mark.parametrize("method,path", PREFLIGHTS)
async def test_a_preflight_from_the_allowed_origin_is_answered(hub_url, method, path):
    answer = await ask(hub_url + path, "OPTIONS", preflight_headers(APP, method, ", content-type"))
    assert answer.status == 204
    assert answer.one("Access-Control-Allow-Origin") == APP
    assert answer.one("Access-Control-Allow-Credentials") == "true"
    assert {"authorization", "last-event-id", "content-type"} <= answer.tokens("Access-Control-Allow-Headers")
    assert method.lower() in answer.tokens("Access-Control-Allow-Methods")
    assert "origin" in answer.tokens("Vary")


@CORS
@pytest.mark.parametrize("origin", OTHER_ORIGINS)
async def test_a_preflight_from_another_origin_is_refused(hub_url, origin):
    for method, path in PREFLIGHTS:
        answer = await ask(hub_url + path, "OPTIONS", preflight_headers(origin, method))
        assert 400 <= answer.status < 500, (origin, path)
        assert answer.one("Content-Type").startswith("application/json")
        assert isinstance(answer.json()["error"], str)
        assert answer.cors() == {}, (origin, path, answer.cors())


async def every_kind_of_answer(ctx: Any, hub_url: str, token: Any, origin: str, user: str) -> dict[str, Answer]:
    """One request of each kind, success or error, from `origin` by `user`."""
    mine, theirs = f"{user}-job", f"{user}-theirs"
    await ctx.journal.create(mine, user, "character")
    await ctx.journal.create(theirs, "bob", "character")
    auth = {"Origin": origin, "Authorization": f"Bearer {token(user)}"}
    as_json = {**auth, "Content-Type": "application/json"}
    character = json.dumps({"name": "Ada"}).encode()
    answers = {
        "status 200": await ask(f"{hub_url}/api/v1/characters/jobs/{mine}", headers=auth),
        "sse 200": await ask(f"{hub_url}/api/v1/sse/jobs/character/{mine}", headers=auth),
        "poll 200": await ask(hub_url + "/api/v1/poll/jobs/my", headers=auth),
        "create 202": await ask(hub_url + "/api/v1/characters", "POST", as_json, character),
        "ticket 201": await ask(hub_url + "/api/v1/sse/tickets", "POST", auth, b""),
        "no token 401": await ask(hub_url + "/api/v1/sse/jobs/my", headers={"Origin": origin}),
        "another user's job 404": await ask(f"{hub_url}/api/v1/sse/jobs/character/{theirs}", headers=auth),
        "no such path 404": await ask(hub_url + "/api/v1/nothing", headers=auth),
        "bad cursor 400": await ask(hub_url + "/api/v1/poll/jobs/my?cursor=abc", headers=auth),
        "bad body 400": await ask(hub_url + "/api/v1/characters", "POST", as_json, b"{"),
        "method 405": await ask(hub_url + "/api/v1/characters", headers=auth),
        "too large 413": await ask(hub_url + "/api/v1/characters", "POST", as_json, b" " * 20_000),
        "headers too large 431": await ask(hub_url + "/api/v1/sse/jobs/my", headers={**auth, "X-Big": "x" * 20_000}),
    }
    # Used up for the next minute.
    with contextlib.suppress(RateLimited):
        for _ in range(ctx.settings.job_rate_per_minute):
            await ctx.job_rate.check(user)
    answers["rate limited 429"] = await ask(hub_url + "/api/v1/characters", "POST", as_json, character)
    return answers


@CORS
async def test_answers_carry_cors_headers_for_the_allowed_origin_only(ctx, hub_url, token):
    allowed = await every_kind_of_answer(ctx, hub_url, token, APP, "alice")
    for case, answer in allowed.items():
        assert str(answer.status) in case, (case, answer.status, answer.body)
        assert answer.one("Access-Control-Allow-Origin") == APP, case
        assert answer.one("Access-Control-Allow-Credentials") == "true", case
        assert "retry-after" in answer.tokens("Access-Control-Expose-Headers"), case
        assert "origin" in answer.tokens("Vary"), case
    assert allowed["rate limited 429"].one("Retry-After")

    for user, origin in (("carol", "https://evil.example"), ("dave", "null")):
        refused = await every_kind_of_answer(ctx, hub_url, token, origin, user)
        for case, answer in refused.items():
            assert answer.cors() == {}, (origin, case, answer.cors())
            # The answer depends on the Origin: a cache must know it.
            assert "origin" in answer.tokens("Vary"), case


async def test_without_configured_origins_there_are_no_cors_headers(ctx, hub_url, token):
    for user, origin in (("alice", APP), ("carol", hub_url)):
        # Browsers send Origin on same-origin POSTs too: the request is still answered.
        answers = await every_kind_of_answer(ctx, hub_url, token, origin, user)
        for case, answer in answers.items():
            assert str(answer.status) in case, (case, answer.status, answer.body)
            assert answer.cors() == {}, (case, answer.cors())
            assert "origin" not in answer.tokens("Vary"), case
        for method, path in PREFLIGHTS:
            answer = await ask(hub_url + path, "OPTIONS", preflight_headers(origin, method))
            assert 400 <= answer.status < 500 and answer.cors() == {}, path
            assert answer.json()["error"] == "bad_request"


@pytest.mark.parametrize("configured", [(), (APP,)], ids=["no CORS", "CORS"])
async def test_another_site_cannot_start_a_job_with_the_users_cookie(ctx, hub_url, token, settings_for, configured):
    # A form post or a fetch without a JSON Content-Type needs no preflight,
    # so the browser sends it, cookie and all: the hub must not act on it.
    ctx.settings = settings_for(cors_origins=configured)
    cookie = {"Cookie": f"hub_token={token('alice')}", "Origin": "https://evil.example"}
    # The same requests from the hub's own page: only the Content-Type stops them.
    own_page = {**cookie, "Origin": hub_url}
    body = json.dumps({"name": "Mallory's puppet"}).encode()
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        for sender, refusal in ((cookie, (403, "forbidden")), (own_page, (400, "bad_request"))):
            headers = sender if content_type is None else {**sender, "Content-Type": content_type}
            answer = await ask(hub_url + "/api/v1/characters", "POST", headers, body)
            assert (answer.status, answer.json()["error"]) == refusal, content_type
            assert answer.cors() == {}
    poll = await ask(hub_url + "/api/v1/poll/jobs/my", headers={"Authorization": f"Bearer {token('alice')}"})
    assert poll.json() == {"events": [], "cursor": "0-0"}, "no job may have been started"

    # Another site's cookie is refused even with the JSON type (which only a
    # preflight lets through); the hub's own page gets its job.
    answer = await ask(hub_url + "/api/v1/characters", "POST", {**cookie, "Content-Type": "application/json"}, body)
    assert answer.status == 403
    answer = await ask(hub_url + "/api/v1/characters", "POST", {**own_page, "Content-Type": "application/json"}, body)
    assert answer.status == 202
