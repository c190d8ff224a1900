"""JWT verification and (for development) issuing.

Two kinds of callers hold tokens signed with the same key: users (a browser,
a dashboard), whose `sub` is their user id, and services (an app's backend or
workers), whose token also carries the `hub:publish` scope. A service may
create jobs for any user and publish the progress of external jobs; it never
opens a user's stream.
"""

from __future__ import annotations

import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from hub.errors import ConfigError, Unauthorized
from hub.store.settings import Settings

#: Longer tokens are refused before any parsing.
MAX_TOKEN_LENGTH = 8192
MAX_USER_ID_LENGTH = 256
#: The scope that makes a token a service's.
PUBLISH_SCOPE = "hub:publish"
#: Verified tokens remembered (the least recently used go first), and the
#: characters they may hold together: a client that reconnects with the same
#: token is not checked again until that token expires.
VERIFIED_TOKENS = 16_384
VERIFIED_TOKEN_CHARS = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking, and until when their credentials hold (epoch seconds).
    `user` is the token's `sub`: a user id, or a service's name."""

    user: str
    expires_at: float
    scopes: frozenset[str] = frozenset()

    @property
    def service(self) -> bool:
        return PUBLISH_SCOPE in self.scopes


class TokenVerifier:
    """Checks tokens, and remembers the identity of those it accepted until
    they expire. Only time can make a token the verifier accepted invalid
    (its signing key, audience and issuer are fixed for the process): a
    remembered token is taken again only before its `exp`, the leeway aside;
    after that it is checked in full, as if new."""

    def __init__(
        self, settings: Settings, *, remember: int = VERIFIED_TOKENS, remember_chars: int = VERIFIED_TOKEN_CHARS
    ) -> None:
        key = settings.jwt_public_key or settings.jwt_secret
        if not key:
            raise ConfigError("set HUB_JWT_SECRET (HS256) or HUB_JWT_PUBLIC_KEY with HUB_JWT_ALGORITHMS")
        self._key = key
        self._algorithms = list(settings.jwt_algorithms)
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_seconds
        self._verified: OrderedDict[str, Identity] = OrderedDict()
        self._verified_chars = 0
        self._remember = remember
        self._remember_chars = remember_chars

    def verify(self, token: str) -> Identity:
        """The identity of a valid token; raises Unauthorized."""
        identity = self._verified.get(token)
        if identity is not None:
            if time.time() < identity.expires_at:
                self._verified.move_to_end(token)
                return identity
            self._forget(token)
        claims = self.claims(token)
        identity = Identity(user=str(claims["sub"]), expires_at=claims["exp"], scopes=_scopes(claims.get("scope")))
        if time.time() < identity.expires_at:
            self._keep(token, identity)
        return identity

    @property
    def remembered(self) -> int:
        """Verified tokens held."""
        return len(self._verified)

    def _keep(self, token: str, identity: Identity) -> None:
        if len(token) > self._remember_chars:
            return
        if token in self._verified:
            self._forget(token)
        self._verified[token] = identity
        self._verified_chars += len(token)
        while len(self._verified) > self._remember or self._verified_chars > self._remember_chars:
            oldest, _ = self._verified.popitem(last=False)
            self._verified_chars -= len(oldest)

    def _forget(self, token: str) -> None:
        del self._verified[token]
        self._verified_chars -= len(token)

    def claims(self, token: str) -> dict[str, Any]:
        """The claims of a valid token, checked in full; raises Unauthorized."""
        if not token:
            raise Unauthorized("missing token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("token too large")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidKeyError:
            # Not only InvalidTokenError: a token whose algorithm does not fit
            # the configured key is as unusable, not a crash. PyJWT's own
            # message for it quotes a Python object's repr.
            raise Unauthorized("invalid token: its alg does not fit the hub's key (see HUB_JWT_ALGORITHMS)") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {_describe(exc)}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > MAX_USER_ID_LENGTH:
            raise Unauthorized("invalid token: sub must be a non-empty string")
        problem = subject_problem(subject)
        if problem:
            raise Unauthorized(f"invalid token: sub {problem}")
        claims["exp"] = _numeric_date(claims["exp"])
        return claims


def issue_token(settings: Settings, sub: str, ttl_seconds: int = 3600, scope: str | None = None) -> str:
    """A token the hub accepts; needs the shared secret (HS algorithms).
    `scope` (space-separated) is set for a service: `PUBLISH_SCOPE`."""
    if settings.jwt_public_key:
        # A token signed with a secret beside the key would be refused.
        raise ConfigError(
            "no token can be issued here: with HUB_JWT_PUBLIC_KEY set, the hub only verifies tokens;"
            " your app's issuer signs them with its private key"
        )
    if not settings.jwt_secret:
        raise ConfigError("issuing tokens needs HUB_JWT_SECRET")
    if not sub or len(sub) > MAX_USER_ID_LENGTH:
        raise ConfigError(f"the token's subject must be 1 to {MAX_USER_ID_LENGTH} characters")
    problem = subject_problem(sub)
    if problem:
        raise ConfigError(f"the token's subject {problem}")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl_seconds)}
    if scope:
        claims["scope"] = scope
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    algorithm = next((a for a in settings.jwt_algorithms if a.startswith("HS")), "HS256")
    return jwt.encode(claims, settings.jwt_secret, algorithm=algorithm)


def subject_problem(subject: str) -> str | None:
    """Why `subject` cannot name a user or a service, or None. It becomes a
    Redis key, a log field and a JSON string: a lone surrogate (what Python
    makes of bytes that are not UTF-8) cannot be encoded, and a control
    character (NUL, a line break) would forge log lines or cut keys."""
    try:
        subject.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate, or bytes that are not UTF-8)"
    if any(unicodedata.category(char) == "Cc" for char in subject):
        return "must not contain control characters (NUL, line breaks, tabs...)"
    return None


def _scopes(value: Any) -> frozenset[str]:
    # OAuth's `scope` is one space-separated string (RFC 8693). Anything else
    # grants nothing: a user's token from an identity provider that puts
    # other things there must still work as a user's.
    if not isinstance(value, str):
        return frozenset()
    return frozenset(value.split())


def _numeric_date(value: Any) -> float:
    # PyJWT takes anything int() takes ("1735689600" too, or 10**400, which
    # float() cannot hold); a NumericDate is a JSON number (RFC 7519).
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            pass
    raise Unauthorized("invalid token: exp must be a number of seconds")


def _describe(exc: jwt.PyJWTError) -> str:
    # PyJWT's messages name the failed check without echoing the token; one
    # that shows a Python object instead ("<... at 0x...>") says nothing to
    # a client, so the error's name stands in for it.
    text = str(exc)
    if not text or "<" in text or " at 0x" in text:
        text = exc.__class__.__name__
    return text[:120]
