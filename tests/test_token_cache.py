"""The verifier remembers the tokens it accepted: a client that reconnects
with the same token is not checked again, until that token expires, and
never past it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from hub.errors import Unauthorized
from hub.store.settings import Settings
from hub.web.auth import TokenVerifier, issue_token

SECRET = "a-secret-that-is-long-enough-for-hs256-tokens"


def spy_on_checks(verifier: TokenVerifier) -> list[str]:
    """The tokens the verifier checks in full (decodes), in order."""
    checked: list[str] = []
    claims = verifier.claims

    def spy(token: str) -> dict[str, Any]:
        checked.append(token)
        return claims(token)

    verifier.claims = spy  # type: ignore[method-assign]
    return checked


def token(sub: str = "alice", exp: float | None = None, **claims: Any) -> str:
    body = {"sub": sub, "exp": exp if exp is not None else int(time.time()) + 600, **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


def verifier(**kwargs: Any) -> tuple[TokenVerifier, list[str]]:
    settings = Settings(jwt_secret=SECRET, **kwargs.pop("settings", {}))
    checker = TokenVerifier(settings, **kwargs)
    return checker, spy_on_checks(checker)


def refused(verify: Callable[[], Any]) -> str:
    with pytest.raises(Unauthorized) as caught:
        verify()
    return str(caught.value)


def test_a_token_used_again_is_checked_once():
    checker, checked = verifier()
    alice, service = token("alice"), token("billing", scope="hub:publish")
    first = checker.verify(alice)
    assert checker.verify(alice) == first and first.user == "alice"
    assert checker.verify(service).service and checker.verify(service).service
    assert checked == [alice, service]


def test_a_refused_token_is_checked_every_time():
    checker, checked = verifier()
    forged = jwt.encode({"sub": "alice", "exp": time.time() + 600}, "another-secret-long-enough-for-hs256", "HS256")
    for _ in range(2):
        assert "invalid token" in refused(lambda: checker.verify(forged))
    assert checked == [forged, forged]
    assert checker.remembered == 0


def test_a_remembered_token_is_refused_once_it_expires():
    checker, checked = verifier(settings={"jwt_leeway_seconds": 0})
    expires = time.time() + 1.0
    short = token(exp=expires)
    checker.verify(short)
    checker.verify(short)
    assert checked == [short]
    # The subject of the test is the clock passing the token's exp.
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    assert refused(lambda: checker.verify(short)) == "token expired"
    assert checked == [short, short], "checked again in full once expired"
    assert checker.remembered == 0


def test_past_its_exp_a_token_is_checked_in_full_even_within_the_leeway():
    checker, checked = verifier(settings={"jwt_leeway_seconds": 30})
    expires = time.time() + 1.0
    short = token(exp=expires)
    checker.verify(short)
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    # Still valid (within the leeway), but never from memory past its exp.
    assert checker.verify(short).user == "alice"
    assert checker.verify(short).user == "alice"
    assert checked == [short, short, short]


def test_the_verifier_remembers_a_bounded_number_of_tokens_least_recently_used_first():
    checker, checked = verifier(remember=3)
    tokens = [token(f"user{n}") for n in range(5)]
    for each in tokens[:3]:
        checker.verify(each)
    checker.verify(tokens[0])  # used again: the most recent now
    for each in tokens[3:]:
        checker.verify(each)
    assert checker.remembered == 3
    checked.clear()
    for each in (tokens[0], tokens[3], tokens[4]):
        checker.verify(each)
    assert checked == [], "the three most recently used are remembered"
    checker.verify(tokens[1])
    assert checked == [tokens[1]], "the least recently used went first"


def test_the_verifier_remembers_a_bounded_amount_of_token_text():
    big = [token(f"user{n}", padding="x" * 2000) for n in range(10)]
    checker, _ = verifier(remember_chars=3 * len(big[0]))
    for each in big:
        checker.verify(each)
    assert checker.remembered == 3


def test_tokens_from_the_hubs_own_issuer_are_remembered_too():
    settings = Settings(jwt_secret=SECRET)
    checker = TokenVerifier(settings)
    checked = spy_on_checks(checker)
    issued = issue_token(settings, "alice", ttl_seconds=60)
    assert checker.verify(issued) == checker.verify(issued)
    assert checked == [issued]
