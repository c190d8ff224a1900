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
