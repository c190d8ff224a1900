"""JWT attacks: every forged, confused or malformed token is a 401 in the
contract's JSON on a stream, a long-poll and the jobs API alike.

tests/test_auth.py has the basic bad tokens; these are the tricks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.errors import Unauthorized
from hub.store.settings import Settings
from hub.web.auth import MAX_TOKEN_LENGTH, PUBLISH_SCOPE, TokenVerifier
from tests.support.http import request
from tests.support.tokens import SECRET

pytestmark = pytest.mark.gen_test(timeout=30)

SSE = "/api/v1/sse/jobs/character/j1"
POLL = "/api/v1/poll/jobs/character/j1"
JOBS = "/api/v1/characters/jobs/j1"
ENDPOINTS = (SSE, POLL, JOBS)


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


HUB_KEY = _rsa_key()
OTHER_KEY = _rsa_key()
PUBLIC_PEM = (
    HUB_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
RSA_HUB = pytest.mark.hub_settings(jwt_public_key=PUBLIC_PEM, jwt_algorithms=("RS256",), jwt_secret=None)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def crafted(header: dict[str, Any], claims: Any, key: bytes | None = SECRET.encode()) -> str:
    """A token put together by hand, HMAC-SHA256-signed with `key` whatever
    its header says (None: no signature at all). PyJWT would refuse to
    encode most of these."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 600, **extra}


def hs256(key: str = SECRET, headers: dict[str, Any] | None = None, **extra: Any) -> str:
    return jwt.encode(claims(**extra), key, algorithm="HS256", headers=headers)


async def answer(url: str, token: str, via: str = "header") -> tuple[int, Any]:
    headers = {}
    if via == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif via == "query":
        url += f"?access_token={token}"
    else:
        headers["Cookie"] = f"hub_token={token}"
    response = await request(url, headers=headers)
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status, None
        assert response.headers["content-type"].startswith("application/json"), response.headers
        return response.status, await response.json_body()
    finally:
        response.close()


async def assert_refused(hub_url: str, token: str, message: str = "", via: str = "header") -> None:
    for path in ENDPOINTS:
        status, body = await answer(hub_url + path, token, via)
        assert status == 401, (path, body)
        assert body["error"] == "unauthorized" and isinstance(body["message"], str), body
        assert message in body["message"], (path, body)


async def assert_accepted(hub_url: str, token: str, via: str = "header") -> None:
    for path in ENDPOINTS:
        status, body = await answer(hub_url + path, token, via)
        assert status == 200, (path, body)


@pytest.fixture
def job(ctx: Any, io_loop: Any) -> str:
    io_loop.run_sync(lambda: ctx.journal.create("j1", "alice", "character"))
    return "j1"


# Algorithm confusion ------------------------------------------------------------------


@RSA_HUB
async def test_an_hs256_token_keyed_with_the_public_key_is_refused(hub_url, job):
    await assert_accepted(hub_url, jwt.encode(claims(), HUB_KEY, algorithm="RS256"))
    der = HUB_KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for key in (PUBLIC_PEM.encode(), PUBLIC_PEM.strip().encode(), der):
        await assert_refused(hub_url, crafted({"alg": "HS256", "typ": "JWT"}, claims(), key))
        # The same HMAC under an asymmetric name is no better.
        await assert_refused(hub_url, crafted({"alg": "RS256", "typ": "JWT"}, claims(), key))


@RSA_HUB
async def test_an_rsa_hub_takes_only_its_own_key_and_algorithm(hub_url, job):
    await assert_refused(hub_url, jwt.encode(claims(), OTHER_KEY, algorithm="RS256"))
    # The right key, but an algorithm the hub was not configured for.
    await assert_refused(hub_url, jwt.encode(claims(), HUB_KEY, algorithm="PS256"), "alg")
    await assert_refused(hub_url, hs256())


async def test_an_hs256_hub_refuses_asymmetric_tokens(hub_url, job):
    await assert_accepted(hub_url, hs256())
    await assert_refused(hub_url, jwt.encode(claims(), OTHER_KEY, algorithm="RS256"), "alg")
    await assert_refused(hub_url, jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"))
    # An RS256 header over an HMAC made with the hub's own secret.
    await assert_refused(hub_url, crafted({"alg": "RS256"}, claims()))


@pytest.mark.hub_settings(jwt_algorithms=("HS256", "RS256"))
async def test_a_token_the_configured_key_cannot_check_is_a_401_not_a_crash(hub_url, job):
    # With RS256 listed but only a secret configured, PyJWT cannot even load
    # the key for an RS256 token: that is still the client's 401.
    await assert_accepted(hub_url, hs256())
    await assert_refused(hub_url, jwt.encode(claims(), OTHER_KEY, algorithm="RS256"))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_is_refused_in_every_spelling(hub_url, job, alg):
    for signature_key in (None, SECRET.encode()):
        token = crafted({"alg": alg, "typ": "JWT"}, claims(), signature_key)
        for via in ("header", "query", "cookie"):
            await assert_refused(hub_url, token, via=via)


@RSA_HUB
async def test_alg_none_is_refused_by_an_rsa_hub(hub_url, job):
    await assert_refused(hub_url, crafted({"alg": "none"}, claims(), None))


# Key selection ------------------------------------------------------------------------

KIDS = [
    "../../../../../../dev/null",
    "/dev/null",
    "../../hub/settings.py",
    "http://evil.example/jwks.json",
    "https://attacker.example/.well-known/jwks.json",
    "' OR '1'='1' --",
    "1; DROP TABLE keys; --",
    "",
]


async def test_kid_never_chooses_the_key(hub_url, job):
    attacker = "attacker-secret-of-a-decent-length-too"
    for kid in KIDS:
        # The hub's key with any kid: the kid changes nothing.
        await assert_accepted(hub_url, hs256(headers={"kid": kid}))
        # Any other key with that kid: refused, whatever the kid points at.
        await assert_refused(hub_url, hs256(attacker, headers={"kid": kid}))
        await assert_refused(hub_url, crafted({"alg": "HS256", "kid": kid}, claims(), b""))
    # A key sent along in the header is not trusted either.
    jwk = {"kty": "oct", "k": b64url(attacker.encode())}
    for field, value in (("jwk", jwk), ("jku", "https://attacker.example/jwks.json"), ("x5u", "https://e.example/c")):
        await assert_refused(hub_url, hs256(attacker, headers={field: value}))


@RSA_HUB
async def test_an_rsa_hub_ignores_kid_and_embedded_keys(hub_url, job):
    attacker_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(OTHER_KEY.public_key()))
    for kid in KIDS:
        await assert_accepted(hub_url, jwt.encode(claims(), HUB_KEY, algorithm="RS256", headers={"kid": kid}))
        await assert_refused(hub_url, jwt.encode(claims(), OTHER_KEY, algorithm="RS256", headers={"kid": kid}))
    forged = jwt.encode(claims(), OTHER_KEY, algorithm="RS256", headers={"jwk": attacker_jwk, "kid": "hub"})
    await assert_refused(hub_url, forged)


# Time ---------------------------------------------------------------------------------


async def test_expired_and_not_yet_valid_tokens_are_refused(hub_url, job):
    now = int(time.time())
    await assert_refused(hub_url, hs256(exp=now - 60), "expired")
    await assert_refused(hub_url, hs256(nbf=now + 60), "not yet valid")
    # Inside the leeway (5 s by default) a clock a little ahead is forgiven.
    await assert_accepted(hub_url, hs256(nbf=now + 2))


async def test_a_token_expired_within_the_leeway_still_reads_the_jobs_api(hub_url, job):
    status, body = await answer(hub_url + JOBS, hs256(exp=int(time.time()) - 3))
    assert status == 200, body
    # Streams and held polls, which end when their token expires, want an
    # unexpired one (tests/test_security_streams.py).


@pytest.mark.hub_settings(jwt_leeway_seconds=0)
async def test_the_leeway_is_configurable(hub_url, job):
    now = int(time.time())
    await assert_refused(hub_url, hs256(exp=now - 3), "expired")
    await assert_refused(hub_url, hs256(nbf=now + 3), "not yet valid")
    await assert_accepted(hub_url, hs256())


async def test_missing_or_malformed_exp_is_refused(hub_url, job):
    later = int(time.time()) + 600
    for exp in (None, "tomorrow", str(later), [later], {"at": later}, True, 10**400):
        await assert_refused(hub_url, crafted({"alg": "HS256"}, {"sub": "alice", "exp": exp}))
    await assert_refused(hub_url, crafted({"alg": "HS256"}, {"sub": "alice"}), "exp")


# Audience and issuer (the basic cases are in tests/test_auth.py) -----------------------


@pytest.mark.hub_settings(jwt_audience="hub", jwt_issuer="https://auth.example")
async def test_audience_and_issuer_must_match_exactly(hub_url, job):
    iss = "https://auth.example"
    await assert_accepted(hub_url, hs256(aud="hub", iss=iss))
    await assert_accepted(hub_url, hs256(aud=["other", "hub"], iss=iss))
    for aud, issuer in (
        (["other", "another"], iss),
        ("HUB", iss),
        ("hub ", iss),
        ("", iss),
        ("hub", None),
        ("hub", "https://auth.example/"),
        ("hub", "https://AUTH.example"),
        ("hub", "https://auth.example.evil.example"),
    ):
        extra: dict[str, Any] = {"aud": aud}
        if issuer is not None:
            extra["iss"] = issuer
        await assert_refused(hub_url, hs256(**extra))


# Shape --------------------------------------------------------------------------------


async def test_huge_tokens_are_refused_unread(hub_url, job, monkeypatch):
    def padded(size: int) -> str:
        """A valid token of about `size` characters (base64 makes 4 of 3)."""
        return hs256(pad="x" * ((size - len(hs256(pad=""))) * 3 // 4))

    fits = padded(MAX_TOKEN_LENGTH - 8)
    assert MAX_TOKEN_LENGTH - 16 < len(fits) <= MAX_TOKEN_LENGTH
    await assert_accepted(hub_url, fits)

    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    too_big = padded(MAX_TOKEN_LENGTH + 8)
    assert MAX_TOKEN_LENGTH < len(too_big) < MAX_TOKEN_LENGTH + 16
    # Validly signed: only its size refuses it.
    await assert_refused(hub_url, too_big, "too large")
    await assert_refused(hub_url, "e" * 15_000 + ".x.y", "too large", via="query")
    assert decoded == []


@pytest.mark.parametrize(
    "sub", [123, 0, ["alice"], None, {"id": "alice"}, True, 1.5, "", "a" * 257], ids=lambda sub: repr(sub)[:20]
)
async def test_sub_must_be_a_short_nonempty_string(hub_url, job, sub):
    await assert_accepted(hub_url, crafted({"alg": "HS256", "typ": "JWT"}, claims()))
    await assert_refused(hub_url, crafted({"alg": "HS256", "typ": "JWT"}, claims(sub=sub)))


async def test_tokens_that_are_not_jwts_are_refused(hub_url, job):
    good = hs256()
    header, payload, signature = good.split(".")
    for token in (
        f"{header}.{payload}",
        f"{header}.{payload}.{signature}.extra",
        f"{header}.{payload}.{signature[:-4]}AAAA",
        f"{header}.{b64url(b'[1, 2]')}.{signature}",
        crafted({"alg": "HS256"}, ["alice"]),
        crafted({"alg": "HS256"}, "alice"),
        crafted({"alg": "HS256", "crit": ["exp"]}, claims()),
        crafted({"alg": ["HS256"]}, claims()),
        "Bearer " + good,
    ):
        await assert_refused(hub_url, token)


# Service tokens ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "scope,service",
    [
        (PUBLISH_SCOPE, True),
        (f"openid  {PUBLISH_SCOPE}\tprofile", True),
        ("hub:publisher", False),
        ("HUB:PUBLISH", False),
        ([PUBLISH_SCOPE], False),
        ({"hub:publish": True}, False),
        ("", False),
    ],
)
def test_a_token_is_a_services_only_when_its_scope_string_names_the_publish_scope(scope, service):
    identity = TokenVerifier(Settings(jwt_secret=SECRET)).verify(hs256(scope=scope))
    assert identity.service is service


async def test_a_forged_service_token_is_a_401_like_any_other(hub_url, job):
    for token in (
        hs256(key="another-secret-that-is-long-enough-too", scope=PUBLISH_SCOPE),
        crafted({"alg": "none"}, claims(scope=PUBLISH_SCOPE), key=None),
        hs256(scope=PUBLISH_SCOPE, exp=int(time.time()) - 3600),
    ):
        response = await request(
            f"{hub_url}/api/v1/jobs/{job}/events",
            "POST",
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            b'{"status": "active"}',
        )
        assert response.status == 401
        assert (await response.json_body())["error"] == "unauthorized"


# Property: whatever a correctly signed token claims, the verifier answers ------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
NOW = int(time.time())
CLAIM_VALUES = {
    "sub": st.text(max_size=300) | JSON,
    "exp": st.integers(NOW - 100, NOW + 10**12)
    | st.integers()
    | st.integers(10**307, 10**400)
    | st.from_regex(r"\A[0-9]{10,12}\Z")
    | JSON,
    "nbf": st.integers(NOW - 100, NOW + 100) | JSON,
    "iat": st.integers(NOW - 100, NOW + 100) | JSON,
    "aud": st.sampled_from(["hub", ["hub"], []]) | JSON,
    "iss": JSON,
    "jti": JSON,
    "scope": st.sampled_from([PUBLISH_SCOPE, f"openid {PUBLISH_SCOPE}", "hub:publisher", [PUBLISH_SCOPE]]) | JSON,
}
HEADERS = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "HS256", "HS384", "none", "RS256"]) | JSON},
    optional={"typ": JSON, "kid": JSON, "crit": JSON, "b64": JSON, "jwk": JSON, "cty": JSON},
)
CLAIMS = st.fixed_dictionaries({}, optional=CLAIM_VALUES) | JSON


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=HEADERS, body=CLAIMS)
def test_the_verifier_answers_any_signed_token_with_an_identity_or_unauthorized(header, body):
    verifier = TokenVerifier(Settings(jwt_secret=SECRET))
    try:
        identity = verifier.verify(crafted(header, body))
    except Unauthorized as refusal:
        assert refusal.message
        return
    assert identity.user == body["sub"] and 1 <= len(identity.user) <= 256
    assert type(body["exp"]) in (int, float) and identity.expires_at == body["exp"] > time.time() - 10
    scope = body.get("scope")
    assert identity.service == (isinstance(scope, str) and PUBLISH_SCOPE in scope.split())


@settings(max_examples=200, deadline=None)
@given(token=st.text(max_size=200) | st.text(max_size=20).map(lambda t: f"{t}.{t}.{t}"))
def test_the_verifier_refuses_arbitrary_text(token):
    verifier = TokenVerifier(Settings(jwt_secret=SECRET))
    with pytest.raises(Unauthorized):
        verifier.verify(token)
