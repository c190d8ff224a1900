"""Both job types, run by a real worker, followed over SSE from start to end."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.sse import Frame

pytestmark = pytest.mark.gen_test(timeout=60)


def assert_well_formed_job_stream(frames: list[Frame], job_id: str) -> list[Frame]:
    assert frames[0].retry == 3000
    assert frames[1].type == "connected" and frames[1].data["jobId"] == job_id and frames[1].id is None
    assert frames[2].type == "initial_status" and frames[2].id
    updates = frames[2:]
    ids = [f.id for f in updates]
    assert all(ids), "every state-carrying event has an id"
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(ids)
    by_attempt: dict[Any, list[int]] = {}
    for frame in updates:
        by_attempt.setdefault(frame.data.get("attempt"), []).append(frame.data["progress"])
    for progress in by_attempt.values():
        assert progress == sorted(progress), "progress never goes down within one attempt"
    terminal = [f for f in updates if f.data["status"] in ("completed", "failed")]
    assert len(terminal) == 1 and terminal[0] is updates[-1]
    return updates


async def test_character_job_streams_every_step_then_ends(api, worker):
    worker()
    alice = api("alice")
    job_id = await alice.create_character("Ada", "curious and brave")
    stream = await alice.stream(f"/api/v1/sse/jobs/character/{job_id}")
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-cache"
    assert stream.headers["x-accel-buffering"] == "no"
    frames = await stream.frames_until_end()
    updates = assert_well_formed_job_stream(frames, job_id)

    steps = [f.data.get("step") for f in updates if f.data["status"] == "active"]
    assert {"archetype", "traits", "attributes", "backstory"} <= set(steps)
    final = updates[-1].data
    assert final["status"] == "completed" and final["progress"] == 100 and final["completedAt"]
    character = final["result"]
    assert character["name"] == "Ada" and "curious" in character["traits"]
    assert "Ada" in character["backstory"]

    # The old polling endpoint tells the same story.
    response = await alice.get(f"/api/v1/characters/jobs/{job_id}")
    job = (await response.json_body())["data"]
    assert response.status == 200
    assert job["status"] == "completed" and job["result"] == character
    assert job["createdAt"] <= job["startedAt"] <= job["completedAt"] and job["updatedAt"]


async def test_media_job_renders_an_image_only_its_owner_can_fetch(api, worker):
    worker()
    alice, mallory = api("alice"), api("mallory")
    job_id = await alice.create_image("a red fox at dawn", width=96, height=64)
    stream = await alice.stream(f"/api/v1/sse/jobs/media/{job_id}")
    updates = assert_well_formed_job_stream(await stream.frames_until_end(), job_id)
    result = updates[-1].data["result"]
    assert updates[-1].data["status"] == "completed"
    assert (result["width"], result["height"]) == (96, 64)

    image = await alice.get(result["url"])
    png = await image.body()
    assert image.status == 200 and image.headers["content-type"] == "image/png"
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) == result["bytes"]

    stolen = await mallory.get(result["url"])
    assert stolen.status == 404
    assert (await stolen.json_body())["error"] == "not_found"


async def test_my_stream_follows_jobs_created_after_connecting(api, worker):
    worker()
    alice = api("alice")
    stream = await alice.stream("/api/v1/sse/jobs/my")
    assert (await stream.frame()).retry == 3000
    assert (await stream.frame()).type == "connected"
    first, second = await alice.create_character("Bo"), await alice.create_image("rain")
    finished: set[str] = set()
    seen_ids: list[str] = []
    while finished != {first, second}:
        frame = await stream.frame()
        assert frame is not None and frame.type == "job_update"
        seen_ids.append(frame.id)
        if frame.data["status"] in ("completed", "failed"):
            assert frame.data["status"] == "completed"
            finished.add(frame.data["jobId"])
    assert len(seen_ids) == len(set(seen_ids))
    stream.close()
