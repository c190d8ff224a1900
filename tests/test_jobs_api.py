"""The jobs API refuses bad input with the contract's JSON."""

from __future__ import annotations

import pytest

from tests.support.bodies import BAD_BODIES
from tests.support.http import request

pytestmark = pytest.mark.gen_test(timeout=30)


@pytest.mark.parametrize(
    "path,body,message", [(path, body, message) for path, cases in BAD_BODIES.items() for body, message in cases]
)
async def test_invalid_job_input_is_a_400_that_says_why(api, path, body, message):
    status, answer = await api("alice").post(path, body)
    assert status == 400
    assert answer == {"error": "bad_request", "message": message}


async def test_malformed_json_and_wrong_content_type_are_400(api, hub_url, token):
    headers = {"Authorization": f"Bearer {token('alice')}", "Content-Type": "application/json"}
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe", b"", b'{"name": "Ada"} {}', b"[" * 16_000, b"{}" + b"\0"):
        response = await request(hub_url + "/api/v1/characters", "POST", headers, body)
        assert response.status == 400 and (await response.json_body())["error"] == "bad_request"
    response = await request(
        hub_url + "/api/v1/characters", "POST", {**headers, "Content-Type": "text/plain"}, b'{"name": "Ada"}'
    )
    assert response.status == 400


async def test_inputs_at_the_limits_are_accepted(api):
    client = api("alice")
    for path, body in (
        ("/api/v1/characters", {"name": "n" * 100, "description": "d" * 2000}),
        ("/api/v1/characters", {"name": "Ada\u2028Lovelace\r\n", "description": "line\r\nbreaks\u0085"}),
        ("/api/v1/media/images", {"prompt": "p" * 1000, "width": 64, "height": 1024}),
        ("/api/v1/media/images", {"prompt": "\U0001f98a at dawn", "width": 1024, "height": 64}),
    ):
        status, answer = await client.post(path, body)
        assert status == 202, (body, answer)


async def test_oversized_body_is_a_413(hub_url, token):
    headers = {"Authorization": f"Bearer {token('alice')}", "Content-Type": "application/json"}
    response = await request(hub_url + "/api/v1/characters", "POST", headers, b'{"name": "' + b"a" * 20000 + b'"}')
    assert response.status == 413
    assert (await response.json_body())["error"] == "payload_too_large"


async def test_unknown_paths_and_methods_answer_json(hub_url, token):
    response = await request(hub_url + "/api/v1/nothing-here")
    assert response.status == 404 and (await response.json_body())["error"] == "not_found"
    response = await request(hub_url + "/api/v1/characters", headers={"Authorization": f"Bearer {token('alice')}"})
    assert response.status == 405 and (await response.json_body())["error"] == "method_not_allowed"
    response = await request(
        hub_url + "/api/v1/sse/jobs/character/..%2F..%2Fetc", headers={"Authorization": f"Bearer {token('alice')}"}
    )
    assert response.status == 404 and (await response.json_body())["error"] == "not_found"


async def test_jobs_need_a_token(hub_url):
    response = await request(hub_url + "/api/v1/characters", "POST", {"Content-Type": "application/json"}, b"{}")
    assert response.status == 401 and (await response.json_body())["error"] == "unauthorized"


async def test_created_job_answers_with_links_and_queued_state(api, ctx):
    status, body = await api("alice").post("/api/v1/media/images", {"prompt": "owl"})
    assert status == 202
    job_id = body["jobId"]
    assert body == {
        "jobId": job_id,
        "type": "media",
        "status": "queued",
        "links": {
            "sse": f"/api/v1/sse/jobs/media/{job_id}",
            "poll": f"/api/v1/poll/jobs/media/{job_id}",
            "status": f"/api/v1/media/jobs/{job_id}",
        },
    }
    response = await api("alice").get(f"/api/v1/media/jobs/{job_id}")
    job = (await response.json_body())["data"]
    assert job["status"] == "queued" and job["progress"] == 0 and job["type"] == "media"
