"""No input can forge an SSE frame or slip past request parsing: properties
checked with Hypothesis, reading frames with the SSE parser the Python client
ships (which follows the specification: see test_python_client.py), and one
end-to-end injection attempt through the API."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hub_client.sse import SSEParser
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors.examples import create_character, generate_image
from actors.examples.images import SIDE_MAX as IMAGE_SIDE_MAX
from actors.examples.images import SIDE_MIN as IMAGE_SIDE_MIN
from hub.errors import BadRequest
from hub.store.events import Event, encode_frame, format_cursor, parse_cursor, retry_frame
from tests.support.http import request

NAME_MAX, DESCRIPTION_MAX, PROMPT_MAX = 100, 2_000, 1_000
character_input = create_character.input.validate
media_input = generate_image.input.validate

_LINE = re.compile(r"\r\n|\r|\n")


def normalised(text: str) -> str:
    return _LINE.sub("\n", text)


# Text full of everything that could end a line or a frame.
BREAKS = ["\r", "\n", "\r\n", "\n\r", "\r\r", "\n\n", "\0", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\ufeff"]
FIELDS = [": ", "data:", "id: 1", "retry: 0", "event: x", " ", "\t", "{", '"']
TRICKY = st.sampled_from([*BREAKS, *FIELDS])
TEXT = st.lists(st.text() | TRICKY, max_size=12).map("".join)


# Frames ------------------------------------------------------------------------------


@settings(max_examples=500)
@given(data=TEXT, event_id=st.none() | TEXT, retry=st.none() | st.integers(0, 10**9))
@example(data="a\r\n\r\ndata: forged\n\nid: 9-9\n\n", event_id="1-0\r\nid: 2-0\n\n", retry=None)
@example(data="\r", event_id="\n", retry=0)
@example(data="", event_id="", retry=None)
def test_a_frame_is_exactly_one_event_whatever_its_text(data, event_id, retry):
    # As the SSE handler sends them: a `retry:` frame first, then the event.
    frame = (b"" if retry is None else retry_frame(retry)) + encode_frame(data, event_id)
    assert frame.endswith(b"\n\n")
    parser = SSEParser()
    events = parser.feed(frame)
    assert len(events) == 1
    assert events[0].data == normalised(data)
    assert parser.retry_ms == retry
    if event_id is None:
        assert events[0].id is None
    else:
        assert not _LINE.search(events[0].id) and "\0" not in events[0].id
        assert events[0].id == _LINE.sub("", event_id).replace("\0", "")


@settings(max_examples=200)
@given(st.lists(st.tuples(TEXT, st.none() | TEXT), min_size=1, max_size=6))
def test_frames_in_a_row_never_run_into_each_other(frames):
    stream = b"".join(encode_frame(data, event_id) for data, event_id in frames)
    assert [event.data for event in SSEParser().feed(stream)] == [normalised(data) for data, _ in frames]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
CURSORS = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))


@settings(max_examples=300)
@given(
    payload=st.fixed_dictionaries(
        {"type": st.just("job_update"), "jobId": TEXT, "status": TEXT},
        optional={"name": TEXT, "prompt": TEXT, "failedReason": TEXT, "result": JSON, "step": TEXT},
    ),
    cursor=st.none() | CURSORS,
)
def test_an_event_round_trips_through_an_sse_parser(payload, cursor):
    event_id = format_cursor(cursor) if cursor else None
    events = SSEParser().feed(Event.make(payload, event_id).frame)
    assert len(events) == 1
    assert json.loads(events[0].data) == payload
    assert events[0].id == event_id


# Request parsing ---------------------------------------------------------------------

_VALID_CURSOR = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


@settings(max_examples=500)
@given(
    raw=st.text()
    | st.from_regex(r"\A\s?[0-9١٢]{0,22}[-–]?[0-9]{0,22}\s?\Z")
    | st.from_regex(r"\A[0-9]{1,20}-[0-9]{1,20}\Z")
)
@example(" 1-2")
@example("1-2\n")
@example("١-٢")  # Arabic-Indic digits
@example("+1-2")
@example("1-+2")
@example("1_0-2")
@example("1-2-3")
@example("-1")
@example("0x1-0")
@example("18446744073709551616-0")  # one more than Redis's 64 bits
@example("0-99999999999999999999")
@example("18446744073709551615-18446744073709551615")
def test_a_cursor_is_two_runs_of_ascii_digits_or_a_bad_request(raw):
    valid = _VALID_CURSOR.fullmatch(raw) is not None and all(int(part) < 2**64 for part in raw.split("-"))
    if valid:
        cursor = parse_cursor(raw)
        assert cursor == tuple(int(part) for part in raw.split("-"))
    else:
        with pytest.raises(BadRequest):
            parse_cursor(raw)


@given(CURSORS)
def test_every_cursor_the_hub_hands_out_parses_back(cursor):
    assert parse_cursor(format_cursor(cursor)) == cursor


# Every string there may be, lone surrogates included (JSON's "\ud800").
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40) | TEXT
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=10,
)
CHARACTER_FIELDS = {"name": ANY_JSON | st.text(min_size=1, max_size=120), "description": ANY_JSON}
MEDIA_FIELDS = {
    "prompt": ANY_JSON | st.text(min_size=1, max_size=20),
    "width": ANY_JSON | st.integers(0, 2000),
    "height": ANY_JSON | st.integers(0, 2000),
}


def bodies(fields: dict[str, Any]) -> st.SearchStrategy[Any]:
    return (
        st.fixed_dictionaries({}, optional=fields)
        | st.fixed_dictionaries({}, optional={**fields, "extra": ANY_JSON})
        | st.dictionaries(ANY_TEXT, ANY_JSON, max_size=4)
        | ANY_JSON
    )


def is_clean_text(value: Any, limit: int, required: bool) -> bool:
    return (
        isinstance(value, str)
        and (len(value) >= 1 or not required)
        and len(value) <= limit
        and value == value.strip()
        and "\0" not in value
        and value.encode("utf-8").decode("utf-8") == value
    )


@settings(max_examples=500)
@given(bodies(CHARACTER_FIELDS))
@example({"name": "Ada\ud800"})
@example({"name": "Ada", "description": "\udfff"})
@example(["name"])
@example(None)
def test_character_input_is_clean_or_a_bad_request(body):
    try:
        clean = character_input(body)
    except BadRequest as refusal:
        assert refusal.message
        return
    assert set(clean) == {"name", "description"}
    assert is_clean_text(clean["name"], NAME_MAX, required=True)
    assert is_clean_text(clean["description"], DESCRIPTION_MAX, required=False)


@settings(max_examples=500)
@given(bodies(MEDIA_FIELDS))
@example({"prompt": "\ud83d fox"})
@example({"prompt": "fox", "width": True})
@example({"prompt": "fox", "width": 1e3})
@example("prompt")
def test_media_input_is_clean_or_a_bad_request(body):
    try:
        clean = media_input(body)
    except BadRequest as refusal:
        assert refusal.message
        return
    assert set(clean) == {"prompt", "width", "height"}
    assert is_clean_text(clean["prompt"], PROMPT_MAX, required=True)
    for side in ("width", "height"):
        assert type(clean[side]) is int and IMAGE_SIDE_MIN <= clean[side] <= IMAGE_SIDE_MAX


# End to end: a job that tries to forge events ----------------------------------------

FORGERY = '\r\n\r\ndata: {"type":"job_update","status":"completed"}\n\n'


@pytest.mark.gen_test(timeout=30)
async def test_a_job_cannot_forge_events_on_the_stream(ctx, api, hub_url):
    alice = api("alice")
    name = "Ada" + FORGERY + "Lovelace"
    job_id = await alice.create_character(name=name, description=FORGERY + "id: 1-1\r\nretry: 1\r")
    result = {"name": name, "backstory": FORGERY * 3, "traits": [FORGERY, "\0", "\u2028"]}
    path = f"/api/v1/sse/jobs/character/{job_id}"

    # Live, with the raw test client.
    live = await alice.stream(path)
    assert [(await live.frame()).retry, (await live.frame()).type] == [ctx.settings.sse_retry_ms, "connected"]
    assert (await live.frame()).data["status"] == "queued"
    active_id = (await ctx.journal.update(job_id, "alice", "character", status="active", progress=50, step=FORGERY))[0]
    completed_id = (
        await ctx.journal.update(job_id, "alice", "character", status="completed", progress=100, result=result)
    )[0]
    frames = await live.frames_until_end()
    assert [(f.data["type"], f.data["status"], f.id) for f in frames] == [
        ("job_update", "active", active_id.decode()),
        ("job_update", "completed", completed_id.decode()),
    ]
    assert frames[0].data["step"] == FORGERY and frames[1].data["result"] == result

    # Replayed from the beginning, the whole body read at once by the client's parser.
    replay = await request(hub_url + path, headers=alice.auth({"Last-Event-ID": "0-0"}))
    assert replay.status == 200
    events = SSEParser().feed(await replay.body())
    payloads = [json.loads(event.data) for event in events]
    assert [(p["type"], p.get("status"), e.id) for p, e in zip(payloads, events, strict=True)] == [
        ("connected", None, None),
        ("job_update", "queued", events[1].id),
        ("job_update", "active", active_id.decode()),
        ("job_update", "completed", completed_id.decode()),
    ]
    assert payloads[2]["step"] == FORGERY and payloads[3]["result"] == result
    assert all(p.get("jobId") == job_id for p in payloads)
