"""Input schemas of job types: a few field kinds that validate a job's input
and describe themselves (as JSON Schema) to clients and the demo page.

Every bad field is a `BadRequest` that says which field and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hub.errors import BadRequest, ConfigError

#: The JSON text of one job's input at most (the request body's bound too).
MAX_INPUT_BYTES = 16 * 1024
_MISSING = object()


@dataclass(frozen=True, kw_only=True)
class Field:
    """One input field. `required` fields must be present; others take `default`."""

    required: bool = False
    description: str = ""

    def clean(self, name: str, value: Any) -> Any:
        raise NotImplementedError

    def missing(self, name: str) -> Any:
        if self.required:
            raise BadRequest(f"{name} is required")
        return self.default_value()

    def default_value(self) -> Any:
        return None

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def _described(self, kind: dict[str, Any]) -> dict[str, Any]:
        if self.description:
            kind["description"] = self.description
        default = self.default_value()
        if not self.required and default is not None:
            kind["default"] = default
        return kind


@dataclass(frozen=True, kw_only=True)
class Text(Field):
    """A string, trimmed; `null` counts as missing."""

    max_length: int = 1_000
    default: str = ""
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ConfigError(f"{self!r}: max_length must be at least 1")
        if not isinstance(self.default, str) or len(self.default) > self.max_length:
            raise ConfigError(f"{self!r}: the default must be a string of at most max_length characters")
        if self.default and self.choices and self.default not in self.choices:
            raise ConfigError(f"{self!r}: the default must be one of the choices")

    def default_value(self) -> Any:
        return self.default

    def clean(self, name: str, value: Any) -> Any:
        if value is None:
            return self.missing(name)
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be a string")
        value = value.strip()
        if self.required and not value:
            raise BadRequest(f"{name} must not be empty")
        if len(value) > self.max_length:
            raise BadRequest(f"{name} must be at most {self.max_length} characters")
        if "\0" in value:
            raise BadRequest(f"{name} must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate ("\ud800" in the JSON) is not text: Redis's JSON
            # (and every client) would choke on it later, far from the cause.
            raise BadRequest(f"{name} must be valid Unicode text") from None
        if self.choices and value not in self.choices and (value or self.required):
            raise BadRequest(f"{name} must be one of: {', '.join(self.choices)}")
        return value

    def describe(self) -> dict[str, Any]:
        kind: dict[str, Any] = {"type": "string", "maxLength": self.max_length}
        if self.choices:
            kind["enum"] = list(self.choices)
        return self._described(kind)


@dataclass(frozen=True, kw_only=True)
class Integer(Field):
    """A whole number within [minimum, maximum]; `null` is refused."""

    minimum: int | None = None
    maximum: int | None = None
    default: int | None = None

    def __post_init__(self) -> None:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ConfigError(f"{self!r}: minimum is above maximum")
        if self.default is not None:
            try:
                self.clean("the default", self.default)
            except BadRequest as exc:
                raise ConfigError(f"{self!r}: {exc.message}") from None

    def default_value(self) -> Any:
        return self.default

    def clean(self, name: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{name} must be an integer")
        low = self.minimum if self.minimum is not None else value
        high = self.maximum if self.maximum is not None else value
        if not low <= value <= high:
            raise BadRequest(f"{name} must be between {low} and {high}")
        return value

    def describe(self) -> dict[str, Any]:
        kind: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            kind["minimum"] = self.minimum
        if self.maximum is not None:
            kind["maximum"] = self.maximum
        return self._described(kind)


@dataclass(frozen=True, kw_only=True)
class Boolean(Field):
    default: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.default, bool):
            raise ConfigError(f"{self!r}: the default must be True or False")

    def default_value(self) -> Any:
        return self.default

    def clean(self, name: str, value: Any) -> Any:
        if not isinstance(value, bool):
            raise BadRequest(f"{name} must be true or false")
        return value

    def describe(self) -> dict[str, Any]:
        return self._described({"type": "boolean"})


@dataclass(frozen=True)
class Schema:
    """The fields of a job's input. Unknown fields are refused, so a typo is
    a 400 and not a silently ignored option."""

    fields: dict[str, Field] = field(default_factory=dict)

    def validate(self, body: Any) -> dict[str, Any]:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise BadRequest("input must be a JSON object")
        unknown = sorted(set(body) - set(self.fields))
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(unknown)[:200]}")
        return {
            name: spec.clean(name, body[name]) if name in body else spec.missing(name)
            for name, spec in self.fields.items()
        }

    def describe(self) -> dict[str, Any]:
        """The schema as JSON Schema, for clients that build forms from it."""
        return {
            "type": "object",
            "properties": {name: spec.describe() for name, spec in self.fields.items()},
            "required": [name for name, spec in self.fields.items() if spec.required],
            "additionalProperties": False,
        }


@dataclass(frozen=True)
class AnyObject(Schema):
    """Any JSON object within the size bound: the input of a job whose own
    workers (an `external` type) know what they expect."""

    def validate(self, body: Any) -> dict[str, Any]:
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise BadRequest("input must be a JSON object")
        try:
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("input must be valid Unicode text") from None
        if len(text) > MAX_INPUT_BYTES:
            raise BadRequest(f"input larger than {MAX_INPUT_BYTES} bytes")
        return body

    def describe(self) -> dict[str, Any]:
        return {"type": "object"}


def as_schema(fields: Schema | dict[str, Field] | None) -> Schema:
    if fields is None:
        return AnyObject()
    if isinstance(fields, Schema):
        return fields
    for name, spec in fields.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"input field names must be non-empty strings, not {name!r}")
        if not isinstance(spec, Field):
            raise TypeError(f"input field {name!r} must be a Text, Integer or Boolean, not {spec!r}")
    return Schema(dict(fields))
