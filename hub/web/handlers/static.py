"""Static files that pages on other origins load: the JavaScript client."""

from __future__ import annotations

import tornado.web

from hub.web.handlers.base import allow_origin


class CorsStaticFileHandler(tornado.web.StaticFileHandler):
    """A static file with the hub's CORS headers: an app on an origin in
    HUB_CORS_ORIGINS can `import` the client (a module script is fetched
    with CORS, unlike a classic <script>)."""

    def initialize(
        self,
        path: str,
        default_filename: str | None = None,
        allowed_symlink_directory: str | list[str] | None = None,
        *,
        cors_origins: tuple[str, ...] = (),
    ) -> None:
        # Passed on only when given: Tornado 6.4 has no such argument.
        more = () if allowed_symlink_directory is None else (allowed_symlink_directory,)
        super().initialize(path, default_filename, *more)
        self.cors_origins = cors_origins

    def set_extra_headers(self, path: str) -> None:
        allow_origin(self, self.cors_origins)
