"""Validation of job inputs: every bad field is a 400 that says which and why."""

from __future__ import annotations

from typing import Any

from hub.errors import BadRequest

NAME_MAX = 100
DESCRIPTION_MAX = 2_000
PROMPT_MAX = 1_000
IMAGE_SIDE_MIN = 64
IMAGE_SIDE_MAX = 1_024
IMAGE_SIDE_DEFAULT = 512


def character_input(body: dict[str, Any]) -> dict[str, Any]:
    _no_unknown(body, {"name", "description"})
    return {
        "name": _text(body, "name", NAME_MAX, required=True),
        "description": _text(body, "description", DESCRIPTION_MAX, required=False),
    }


def media_input(body: dict[str, Any]) -> dict[str, Any]:
    _no_unknown(body, {"prompt", "width", "height"})
    return {
        "prompt": _text(body, "prompt", PROMPT_MAX, required=True),
        "width": _side(body, "width"),
        "height": _side(body, "height"),
    }


VALIDATORS = {"character": character_input, "media": media_input}


def _no_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)[:200]}")


def _text(body: dict[str, Any], name: str, limit: int, *, required: bool) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    value = value.strip()
    if required and not value:
        raise BadRequest(f"{name} must not be empty")
    if len(value) > limit:
        raise BadRequest(f"{name} must be at most {limit} characters")
    if "\0" in value:
        raise BadRequest(f"{name} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in the JSON) is not text: Redis's JSON
        # (and every client) would choke on it later, far from the cause.
        raise BadRequest(f"{name} must be valid Unicode text") from None
    return value


def _side(body: dict[str, Any], name: str) -> int:
    value = body.get(name, IMAGE_SIDE_DEFAULT)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer")
    if not IMAGE_SIDE_MIN <= value <= IMAGE_SIDE_MAX:
        raise BadRequest(f"{name} must be between {IMAGE_SIDE_MIN} and {IMAGE_SIDE_MAX}")
    return value
