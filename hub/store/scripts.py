"""Loads the Lua scripts of the store, each behind the wire format's prelude."""

from __future__ import annotations

from functools import cache
from importlib import resources

from hub.store.wire import lua_prelude


@cache
def load_script(name: str) -> str:
    body = resources.files("hub.store").joinpath("lua", name).read_text(encoding="utf-8")
    return lua_prelude() + body
