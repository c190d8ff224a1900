"""A third-party SSE client (httpx + httpx-sse, not written for this hub)
follows a job over our endpoint to its end, and resumes with Last-Event-ID
exactly where it asks to."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.store.keys import KeySpace

httpx = pytest.importorskip("httpx")
httpx_sse = pytest.importorskip("httpx_sse")


def read_stream(client: Any, path: str, last_event_id: str | None = None) -> tuple[list[Any], Any]:
    """Every frame of one SSE response until the hub ends it, and the response."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with httpx_sse.connect_sse(client, "GET", path, headers=headers) as source:
        return list(source.iter_sse()), source.response


def frame_type(frame: Any) -> str | None:
    return json.loads(frame.data)["type"] if frame.data else None


def test_httpx_sse_follows_a_job_then_resumes_from_the_middle(hub_process, worker, token, settings, sync_redis):
    hub = hub_process()
    headers = {"Authorization": f"Bearer {token('alice')}"}
    with httpx.Client(base_url=hub.url, headers=headers, timeout=30) as client:
        created = client.post("/api/v1/characters", json={"name": "Io", "description": "quiet"})
        assert created.status_code == 202
        job_id = created.json()["jobId"]
        path = f"/api/v1/sse/jobs/character/{job_id}"

        # The first connection, from the start to the end of the job.
        frames: list[Any] = []
        with httpx_sse.connect_sse(client, "GET", path) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            assert source.response.headers["cache-control"] == "no-cache"
            iterator = source.iter_sse()
            while not frames or frame_type(frames[-1]) != "initial_status":
                frames.append(next(iterator))
            # The job is queued, and only now may it run.
            worker()
            frames += list(iterator)

        # `retry: 3000` comes alone, then the greeting (no id), then events.
        assert frames[0].retry == 3000 and frames[0].data == ""
        data = [json.loads(f.data) for f in frames[1:]]
        assert data[0]["type"] == "connected" and frames[1].id == ""
        events = list(zip(frames[2:], data[1:], strict=True))
        assert events[0][1]["type"] == "initial_status" and events[0][1]["status"] == "queued"
        assert [d["type"] for _, d in events[1:]] == ["job_update"] * (len(events) - 1)
        assert [d["status"] for _, d in events].count("completed") == 1
        assert events[-1][1]["status"] == "completed" and events[-1][1]["result"]["name"] == "Io"
        progress = [d["progress"] for _, d in events]
        assert progress == sorted(progress)

        # Every frame names its own id; they are the job's history from the initial state on.
        ids = [f.id for f, _ in events]
        stored = [i.decode() for i, _ in sync_redis.xrange(KeySpace(settings.namespace).job_events(job_id))]
        assert ids == stored[stored.index(ids[0]) :]

        # A second connection resumes from a mid-stream id: exactly the rest.
        middle = len(ids) // 2
        assert 0 < middle < len(ids) - 1
        resumed, _ = read_stream(client, path, last_event_id=ids[middle])
        assert [frame_type(f) for f in resumed[:2]] == [None, "connected"]
        rest = resumed[2:]
        assert [f.id for f in rest] == ids[middle + 1 :]
        assert [json.loads(f.data) for f in rest] == [d for _, d in events[middle + 1 :]]

        # From the terminal event: 204, which tells an SSE client to stop.
        assert client.get(path, headers={"Last-Event-ID": ids[-1]}).status_code == 204
