"""Who may see what: every bad token is a 401, another user's job is a 404."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from tests.support.http import request
from tests.support.metrics import sample
from tests.support.tokens import SECRET

pytestmark = pytest.mark.gen_test(timeout=30)


def b64(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def signed(claims: dict, key: str = SECRET, **kwargs) -> str:
    return jwt.encode(claims, key, algorithm="HS256", **kwargs)


NOW = int(time.time())
BAD_TOKENS = {
    "malformed": "not-a-jwt",
    "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': 'alice', 'exp': NOW + 600})}.",
    "expired": signed({"sub": "alice", "exp": NOW - 3600}),
    "wrong key": signed({"sub": "alice", "exp": NOW + 600}, key="another-secret-of-sufficient-length!"),
    "missing sub": signed({"exp": NOW + 600}),
    "missing exp": signed({"sub": "alice"}),
    "empty sub": signed({"sub": "", "exp": NOW + 600}),
}

SSE_PATHS = ["/api/v1/sse/jobs/my", "/api/v1/sse/jobs/character/{job}", "/api/v1/characters/jobs/{job}"]


async def status_and_body(url: str, headers: dict[str, str] | None = None):
    response = await request(url, headers=headers)
    assert response.headers["content-type"].startswith("application/json")
    return response.status, await response.json_body()


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused_with_401(ctx, hub_url, case):
    await ctx.journal.create("j1", "alice", "character")
    for path in SSE_PATHS:
        status, body = await status_and_body(
            hub_url + path.format(job="j1"), {"Authorization": f"Bearer {BAD_TOKENS[case]}"}
        )
        assert (status, body["error"]) == (401, "unauthorized"), (case, path)
        assert body["message"]


async def test_missing_token_is_401_and_counted(ctx, hub_url):
    status, body = await status_and_body(hub_url + "/api/v1/sse/jobs/my")
    assert (status, body["error"]) == (401, "unauthorized")
    status, _ = await status_and_body(hub_url + "/api/v1/sse/jobs/my", {"Authorization": "Basic YWxpY2U6eA=="})
    assert status == 401
    assert sample(ctx, "hub_connections_rejected_total", reason="unauthorized") == 2


@pytest.mark.hub_settings(jwt_audience="hub", jwt_issuer="https://auth.example")
async def test_audience_and_issuer_are_verified_when_configured(ctx, hub_url):
    good = signed({"sub": "alice", "exp": NOW + 600, "aud": "hub", "iss": "https://auth.example"})
    wrong_aud = signed({"sub": "alice", "exp": NOW + 600, "aud": "other", "iss": "https://auth.example"})
    wrong_iss = signed({"sub": "alice", "exp": NOW + 600, "aud": "hub", "iss": "https://evil.example"})
    no_aud = signed({"sub": "alice", "exp": NOW + 600, "iss": "https://auth.example"})
    await ctx.journal.create("j1", "alice", "character")
    url = hub_url + "/api/v1/characters/jobs/j1"
    assert (await status_and_body(url, {"Authorization": f"Bearer {good}"}))[0] == 200
    for token in (wrong_aud, wrong_iss, no_aud):
        assert (await status_and_body(url, {"Authorization": f"Bearer {token}"}))[0] == 401


async def test_token_in_query_or_cookie_is_accepted(ctx, hub_url, token):
    await ctx.journal.create("j1", "alice", "character")
    url = hub_url + "/api/v1/characters/jobs/j1"
    assert (await status_and_body(f"{url}?access_token={token('alice')}"))[0] == 200
    assert (await status_and_body(url, {"Cookie": f"hub_token={token('alice')}"}))[0] == 200


async def test_another_users_job_is_404_everywhere(ctx, hub_url, token):
    await ctx.journal.create("secret", "alice", "character")
    await ctx.journal.create("pic", "alice", "media")
    mallory = {"Authorization": f"Bearer {token('mallory')}"}
    for path in (
        "/api/v1/characters/jobs/secret",
        "/api/v1/sse/jobs/character/secret",
        "/api/v1/media/jobs/pic",
        "/api/v1/sse/jobs/media/pic",
        "/api/v1/media/jobs/pic/image.png",
        "/api/v1/characters/jobs/no-such-job",
        # the right owner but the wrong type looks like no job at all too
        "/api/v1/media/jobs/secret",
    ):
        status, body = await status_and_body(hub_url + path, mallory)
        assert (status, body["error"]) == (404, "not_found"), path
    assert sample(ctx, "hub_connections_rejected_total", reason="not_found") == 2


async def test_my_stream_never_shows_another_users_job(ctx, api):
    await ctx.journal.create("mine", "alice", "character")
    await ctx.journal.create("theirs", "mallory", "character")
    stream = await api("alice").stream("/api/v1/sse/jobs/my")
    frames = [await stream.frame() for _ in range(3)]
    assert [f.type for f in frames[1:]] == ["connected", "initial_status"]
    assert frames[2].data["jobId"] == "mine"
    await ctx.journal.update("theirs", "mallory", "character", status="active", progress=5)
    await ctx.journal.update("mine", "alice", "character", status="active", progress=7)
    frame = await stream.frame()
    assert (frame.data["jobId"], frame.data["progress"]) == ("mine", 7)
    stream.close()


async def test_tokens_never_reach_the_logs(ctx, hub_url, token, caplog):
    secret_token = token("alice")
    caplog.set_level("DEBUG")
    await status_and_body(f"{hub_url}/api/v1/sse/jobs/character/nope?access_token={secret_token}")
    await status_and_body(f"{hub_url}/api/v1/sse/jobs/my?access_token=garbage.{secret_token[:20]}")
    assert caplog.records, "the access log should have recorded the requests"
    assert secret_token not in caplog.text and secret_token[:20] not in caplog.text
