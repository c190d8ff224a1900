"""The tests' JWT secret and the tokens services use."""

from __future__ import annotations

from hub.store.settings import Settings
from hub.web.auth import PUBLISH_SCOPE, issue_token

SECRET = "test-secret-that-is-long-enough-for-hs256"


def issue_service_token(settings: Settings, name: str = "billing", ttl: int = 600) -> str:
    """A service's token: the `hub:publish` scope."""
    return issue_token(settings, name, ttl, scope=PUBLISH_SCOPE)
