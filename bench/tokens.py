"""Tokens for a crowd of users, minted cheaply.

PyJWT takes about 45 µs a token here, several seconds for 100,000 users.
Their claims differ only in `sub`, so the header and the claims' tail are
encoded once and each token costs one HMAC-SHA256. The hub checks them as
it checks any HS256 token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time


def _encode(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


class Minter:
    """HS256 tokens with `sub`, `iat` and `exp` (now + `ttl_seconds`)."""

    def __init__(self, secret: str, ttl_seconds: int) -> None:
        now = int(time.time())
        self._header = _encode(b'{"alg":"HS256","typ":"JWT"}') + b"."
        self._tail = f',"iat":{now},"exp":{now + ttl_seconds}}}'
        self._mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)

    def token(self, sub: str) -> str:
        signed = self._header + _encode(('{"sub":' + json.dumps(sub) + self._tail).encode())
        mac = self._mac.copy()
        mac.update(signed)
        return (signed + b"." + _encode(mac.digest())).decode()
