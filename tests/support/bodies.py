"""Job bodies the example job types refuse, by path, each with the words the
hub's 400 answer must use."""

from __future__ import annotations

from typing import Any

BAD_BODIES: dict[str, list[tuple[Any, str]]] = {
    "/api/v1/characters": [
        ({}, "name is required"),
        ({"name": ""}, "name must not be empty"),
        ({"name": 7}, "name must be a string"),
        ({"name": "x" * 101}, "name must be at most 100 characters"),
        ({"name": "Ada", "description": "d" * 2001}, "description must be at most 2000 characters"),
        ({"name": "Ada", "colour": "red"}, "unknown field(s): colour"),
        ({"name": None}, "name is required"),
        ({"name": ["Ada"]}, "name must be a string"),
        ({"name": " \t\n"}, "name must not be empty"),
        ({"name": "A\u0000da"}, "name must not contain NUL characters"),
        ({"name": "Ada\ud800"}, "name must be valid Unicode text"),  # a lone surrogate
        ({"name": "Ada", "description": {"text": "x"}}, "description must be a string"),
    ],
    "/api/v1/media/images": [
        ({}, "prompt is required"),
        ({"prompt": "fox", "width": 10}, "width must be between 64 and 1024"),
        ({"prompt": "fox", "height": 4096}, "height must be between 64 and 1024"),
        ({"prompt": "fox", "width": "512"}, "width must be an integer"),
        ({"prompt": "fox", "width": True}, "width must be an integer"),
        ({"prompt": "fox", "width": 512.5}, "width must be an integer"),
        ({"prompt": 42}, "prompt must be a string"),
        ({"prompt": "p" * 1001}, "prompt must be at most 1000 characters"),
        ({"prompt": "\udfff fox"}, "prompt must be valid Unicode text"),
        ({"prompt": "fox", "width": 63}, "width must be between 64 and 1024"),
        ({"prompt": "fox", "height": 1025}, "height must be between 64 and 1024"),
        ({"prompt": "fox", "width": -512}, "width must be between 64 and 1024"),
        ({"prompt": "fox", "width": 10**30}, "width must be between 64 and 1024"),
        ({"prompt": "fox", "width": None}, "width must be an integer"),
        ({"prompt": "fox", "height": [512]}, "height must be an integer"),
    ],
}
