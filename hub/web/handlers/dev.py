"""Development only: issues a token for any user name, so the demo page can
sign in. Routed only when the server runs under `hub up`, never `hub serve`."""

from __future__ import annotations

import re

from hub.errors import BadRequest
from hub.web.auth import issue_token
from hub.web.handlers.base import JsonBodyHandler

DEV_TOKEN_TTL = 24 * 3600
_USER = re.compile(r"\A[A-Za-z0-9_.@-]{1,64}\Z")


class DevTokenHandler(JsonBodyHandler):
    def post(self) -> None:
        user = self.json_body().get("user")
        if not isinstance(user, str) or not _USER.match(user):
            raise BadRequest("user must be 1 to 64 letters, digits or _.@-")
        token = issue_token(self.ctx.settings, user, DEV_TOKEN_TTL)
        self.write_json({"token": token, "user": user, "expiresIn": DEV_TOKEN_TTL})
