"""What the web server does before it trusts a request: credentials that are
not text, keys that do not fit, cookies sent by other sites, a development
endpoint asked for by another name, the JavaScript client from another
origin, bodies nobody asked for and sockets nobody uses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import ROOT, SECRET
from tests.sse_client import request

pytestmark = pytest.mark.gen_test(timeout=60)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(sub: Any, key: Any = SECRET, algorithm: str = "HS256") -> str:
    """A token PyJWT signs as asked (its JSON escapes a lone surrogate)."""
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, key, algorithm=algorithm)


async def answer(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, Any]:
    """The status and JSON body of one request (a stream's body is not read)."""
    data = None if body is None else json.dumps(body).encode()
    extra = {"Content-Type": "application/json"} if data is not None else {}
    response = await request(url, method, {**extra, **(headers or {})}, data)
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status, None
        assert response.headers["content-type"].startswith("application/json"), (url, response.headers)
        return response.status, await response.json_body()
    finally:
        response.close()


# A `sub` that is not text --------------------------------------------------------------

#: Every kind of endpoint a token opens, with the body it takes.
AUTHENTICATED = [
    ("GET", "/api/v1/sse/jobs/my", None),
    ("GET", "/api/v1/sse/jobs/character/j1", None),
    ("GET", "/api/v1/poll/jobs/my", None),
    ("GET", "/api/v1/poll/jobs/my?cursor=0-0", None),
    ("POST", "/api/v1/characters", {"name": "Ada"}),
    ("POST", "/api/v1/jobs", {"type": "character", "input": {"name": "Ada"}}),
    ("GET", "/api/v1/jobs", None),
    ("GET", "/api/v1/jobs/j1", None),
    ("POST", "/api/v1/sse/tickets", None),
    ("POST", "/api/v1/sse/tickets", {"path": "/api/v1/sse/jobs/my"}),
]

NOT_TEXT = ["\udcff", "ada\ud800", "\x00", "ada\nbob", "a\x7fb", "\x85"]


@pytest.mark.parametrize("sub", NOT_TEXT, ids=repr)
async def test_a_sub_that_is_not_text_is_401_everywhere(hub_url, caplog, sub):
    token = signed(sub)
    for method, path, body in AUTHENTICATED:
        status, refused = await answer(hub_url + path, method, bearer(token), body)
        assert (status, refused["error"]) == (401, "unauthorized"), (method, path, refused)
        assert "sub" in refused["message"], refused
    crashes = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name != "hub.access"]
    assert not crashes, crashes


def test_hub_token_refuses_a_user_id_that_is_not_text():
    """`hub token --user $'\\xff'` in a UTF-8 terminal: Python hands over a
    lone surrogate for the undecodable byte."""
    env = {"HUB_JWT_SECRET": SECRET, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    for args in ([b"--user", b"\xff"], [b"--service", b"svc\xff"], [b"--user", b"ada\x01"]):
        result = subprocess.run(
            [sys.executable.encode(), b"-m", b"hub", b"token", *args], env=env, capture_output=True, timeout=30
        )
        stderr = result.stderr.decode(errors="replace").strip()
        print(f"\nhub token {args}: exit {result.returncode}: {stderr}")
        assert result.returncode == 2 and result.stdout == b"", stderr
        assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
        assert stderr.startswith(("hub: the user id must", "hub: the service name must")), stderr
        assert "valid Unicode text" in stderr or "control characters" in stderr, stderr


# A key that does not fit the token's algorithm ------------------------------------------


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


RSA_KEY = _rsa()
RSA_PUBLIC = (
    RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.mark.hub_settings(jwt_public_key=RSA_PUBLIC, jwt_algorithms=("RS256", "ES256"), jwt_secret=None)
async def test_a_token_whose_algorithm_does_not_fit_the_key_gets_a_readable_401(ctx, hub_url):
    await ctx.journal.create("j1", "alice", "character")
    good = signed("alice", RSA_KEY, "RS256")
    status, _ = await answer(hub_url + "/api/v1/jobs/j1", headers=bearer(good))
    assert status == 200
    wrong = signed("alice", ec.generate_private_key(ec.SECP256R1()), "ES256")
    for path in ("/api/v1/jobs/j1", "/api/v1/sse/jobs/character/j1", "/api/v1/poll/jobs/my"):
        status, body = await answer(hub_url + path, headers=bearer(wrong))
        print(f"\n{path}: {status} {body}")
        assert (status, body["error"]) == (401, "unauthorized"), body
        message = body["message"]
        assert "<" not in message and "0x" not in message and "generator" not in message, message
        assert "alg" in message and "key" in message, message


# The hub_token cookie, sent by another site -----------------------------------------------

APP = "https://app.example"
EVIL = "https://evil.example"
COOKIE_PATHS = ["/api/v1/sse/jobs/my", "/api/v1/poll/jobs/my?cursor=0-0", "/api/v1/jobs", "/api/v1/jobs/j1"]
#: What a browser sends with a request another site's page makes: fetch or
#: EventSource (an Origin), an <img> or <script> (Sec-Fetch-Site alone).
CROSS_SITE = [
    {"Origin": EVIL},
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    {"Origin": "https://app.example.evil.example", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
]


def same_site(hub_url: str) -> list[dict[str, str]]:
    """Requests from the hub's own pages, an allowed origin, or no browser."""
    return [
        {},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": hub_url, "Sec-Fetch-Site": "same-origin"},
        {"Origin": hub_url},
        {"Origin": APP, "Sec-Fetch-Site": "cross-site"},
    ]


def rejected(ctx: Any, reason: str) -> float:
    value = ctx.metrics.registry.get_sample_value("hub_connections_rejected_total", {"reason": reason})
    return value or 0.0


@pytest.mark.hub_settings(cors_origins=(APP,))
async def test_another_site_cannot_use_the_cookie_and_its_requests_are_counted(ctx, hub_url, token):
    await ctx.journal.create("j1", "alice", "character")
    cookie = {"Cookie": f"hub_token={token('alice')}"}
    for path in COOKIE_PATHS:
        for headers in CROSS_SITE:
            before = rejected(ctx, "forbidden")
            status, body = await answer(hub_url + path, headers={**cookie, **headers})
            assert (status, body["error"]) == (403, "forbidden"), (path, headers, body)
            assert "cookie" in body["message"], body
            if "/sse/" in path or "/poll/" in path:
                assert rejected(ctx, "forbidden") == before + 1, (path, headers)
        for headers in same_site(hub_url):
            status, body = await answer(hub_url + path, headers={**cookie, **headers})
            assert status == 200, (path, headers, body)
    # A token in the header proves its holder sent it, whatever the page.
    status, _ = await answer(hub_url + "/api/v1/jobs", headers={**bearer(token("alice")), "Origin": EVIL})
    assert status == 200


@pytest.mark.hub_settings(max_connections_per_user=2)
async def test_another_site_cannot_hold_the_users_connection_slots(ctx, hub_url, token):
    """With `SameSite=None`, any page the user visits sends the cookie: it
    must not be able to use up the user's streams."""
    cookie = {"Cookie": f"hub_token={token('alice')}"}
    held = []
    try:
        for _ in range(3):
            response = await request(hub_url + "/api/v1/sse/jobs/my", headers={**cookie, "Origin": EVIL})
            held.append(response)
            assert response.status == 403, response.status
        mine = await request(hub_url + "/api/v1/sse/jobs/my", headers=bearer(token("alice")))
        held.append(mine)
        assert mine.status == 200
    finally:
        for response in held:
            response.close()


# The development token endpoint, asked for by another name --------------------------------


def dev_token(url: str, host: str) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    asked = urllib.request.Request(
        url + "/api/v1/dev/token",
        json.dumps({"user": "ada"}).encode(),
        {"Content-Type": "application/json", "Host": host},
    )
    try:
        with urllib.request.urlopen(asked, timeout=10) as answered:
            return answered.status, json.load(answered)
    except urllib.error.HTTPError as error:
        assert error.headers["Content-Type"].startswith("application/json")
        return error.code, json.load(error)


def test_the_dev_token_endpoint_answers_only_for_this_machine(hub_process):
    """DNS rebinding: a site whose name resolves to 127.0.0.1 makes the
    browser send its own name as Host; the hub must not hand it a token."""
    hub = hub_process(dev_tokens=True)
    port = hub.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        status, body = dev_token(hub.url, host)
        assert status == 200 and body["user"] == "ada", (host, body)
    for host in (
        f"evil.example:{port}",
        "evil.example",
        f"127.0.0.1.evil.example:{port}",
        f"localhost:{port + 1}",
        "localhost",
    ):
        status, body = dev_token(hub.url, host)
        print(f"\nHost {host}: {status} {body}")
        assert (status, body["error"]) == (403, "forbidden"), (host, body)
        assert "token" not in body, body


def test_the_dev_token_endpoint_answers_for_the_configured_host(hub_process):
    hub = hub_process(dev_tokens=True, HUB_HOST="127.0.0.2")
    assert dev_token(hub.url, f"127.0.0.2:{hub.port}")[0] == 200
    assert dev_token(hub.url, f"rebound.example:{hub.port}")[0] == 403


# The JavaScript client, loaded by another origin ------------------------------------------


async def script(hub_url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    response = await request(hub_url + "/static/hub-client.js", headers=headers)
    try:
        assert b"export" in await response.body() or response.status != 200
        return response.status, response.headers
    finally:
        response.close()


@pytest.mark.hub_settings(cors_origins=(APP,))
async def test_the_js_client_can_be_imported_by_an_allowed_origin(hub_url):
    status, headers = await script(hub_url, {"Origin": APP})
    assert status == 200
    assert headers.get("access-control-allow-origin") == APP, headers
    assert "origin" in headers.get("vary", "").lower(), headers
    status, headers = await script(hub_url, {"Origin": EVIL})
    assert status == 200 and "access-control-allow-origin" not in headers, headers
    status, headers = await script(hub_url, {})
    assert status == 200 and "access-control-allow-origin" not in headers, headers


async def test_without_cors_the_js_client_gets_no_cors_headers(hub_url):
    status, headers = await script(hub_url, {"Origin": APP})
    assert status == 200 and not any(name.startswith("access-control-") for name in headers), headers
