"""Development only: issues a token for any user name, so the demo page can
sign in. Routed only when the server runs under `hub up`, never `hub serve`."""

from __future__ import annotations

import re

from hub.errors import BadRequest, Forbidden
from hub.store.settings import Settings
from hub.web.auth import issue_token
from hub.web.handlers.base import Gate, JsonBodyHandler

#: How long a development token is valid: the demo page's, and the one `hub up` prints.
DEV_TOKEN_TTL = 24 * 3600
_USER = re.compile(r"\A[A-Za-z0-9_.@-]{1,64}\Z")
#: The names this machine answers to, whatever HUB_HOST says.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class DevTokenHandler(JsonBodyHandler):
    def initialize(self, gate: Gate, settings: Settings) -> None:
        self.hub_settings = settings

    def prepare(self) -> None:
        super().prepare()
        if self._finished:
            return
        # DNS rebinding: a page on a name the attacker points at 127.0.0.1
        # reaches this port as its own origin, and the browser sends its
        # name as Host. Only this machine's names get a token.
        if self.request.host.lower() not in self._hosts():
            raise Forbidden(
                "the development token endpoint answers requests for this machine only"
                f" (localhost:{self.hub_settings.port}, or HUB_HOST:HUB_PORT)"
            )

    def _hosts(self) -> set[str]:
        port = self.hub_settings.port
        configured = self.hub_settings.host.lower()
        names = {*LOOPBACK_NAMES, f"[{configured}]" if ":" in configured else configured}
        hosts = {f"{name}:{port}" for name in names}
        if port == 80:
            hosts |= names  # a browser leaves the default port out
        return hosts

    def post(self) -> None:
        user = self.json_body().get("user")
        if not isinstance(user, str) or not _USER.match(user):
            raise BadRequest("user must be 1 to 64 letters, digits or _.@-")
        token = issue_token(self.hub_settings, user, DEV_TOKEN_TTL)
        self.write_json({"token": token, "user": user, "expiresIn": DEV_TOKEN_TTL})
