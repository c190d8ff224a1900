"""Checks of the fields of a request body that are not a job's input (whose
schema checks it): each bad field is a BadRequest that says which and why."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from hub.errors import BadRequest

#: Nesting a JSON value may have; Redis's JSON library refuses deeper ones.
MAX_JSON_DEPTH = 32


def refuse_unknown(body: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)[:200]}")


def text(name: str, value: Any, *, max_length: int, min_length: int = 0) -> str:
    """A string taken as it is (an id is not trimmed), valid Unicode, no NUL."""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    if not min_length <= len(value) <= max_length:
        raise BadRequest(f"{name} must be {min_length} to {max_length} characters")
    if "\0" in value:
        raise BadRequest(f"{name} must not contain NUL characters")
    _encodable(name, value)
    return value


def integer(name: str, value: Any, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer")
    if not minimum <= value <= maximum:
        raise BadRequest(f"{name} must be between {minimum} and {maximum}")
    return value


def json_object(name: str, value: Any, *, max_bytes: int) -> dict[str, Any]:
    """A JSON object of at most `max_bytes` (as UTF-8) and MAX_JSON_DEPTH levels."""
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be a JSON object")
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadRequest(f"{name} is nested deeper than {MAX_JSON_DEPTH} levels")
    size = len(_encodable(name, json.dumps(value, separators=(",", ":"), ensure_ascii=False)))
    if size > max_bytes:
        raise BadRequest(f"{name} larger than {max_bytes} bytes")
    return value


def _encodable(name: str, value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in the JSON) is not text: Redis's JSON
        # library (and every client) would choke on it later, far from here.
        raise BadRequest(f"{name} must be valid Unicode text") from None


def _depth(value: Any) -> int:
    # Iterative: the body's parser already bounds the depth, but this check
    # must not be the thing that overflows the stack.
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                pending.extend((child, level + 1) for child in item)
    return deepest
