"""Stream tickets bound to one stream: how a backend hands its user the URL
of one job's stream without handing out a token."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.http import Api, request
from tests.support.tokens import issue_service_token

pytestmark = [pytest.mark.gen_test(timeout=60), pytest.mark.hub_settings(external_job_types=("report",))]
TICKETS = "/api/v1/sse/tickets"


@pytest.fixture
def service(hub_url: str, settings: Any) -> Api:
    return Api(hub_url, issue_service_token(settings, "backend"))


async def status_of(url: str) -> int:
    response = await request(url)
    status = response.status
    response.close()
    return status


async def new_report(service: Api, owner: str) -> dict[str, Any]:
    status, job = await service.post("/api/v1/jobs", {"type": "report", "owner": owner})
    assert status == 202, job
    return dict(job)


async def test_a_service_ticket_opens_its_users_one_stream_and_nothing_else(hub_url, service):
    job = await new_report(service, "alice")
    other = await new_report(service, "alice")
    status, body = await service.post(TICKETS, {"user": "alice", "path": job["links"]["sse"]})
    assert status == 201, body
    ticket = body["ticket"]

    stream = await request(f"{hub_url}{job['links']['sse']}?ticket={ticket}")
    assert stream.status == 200
    frame = await stream.frame()
    while frame is not None and frame.data is None:
        frame = await stream.frame()
    assert frame is not None and frame.data["jobId"] == job["jobId"]
    stream.close()
    # The same stream by long-poll, but not the user's other streams.
    assert await status_of(f"{hub_url}{job['links']['poll']}?ticket={ticket}") == 200
    assert await status_of(f"{hub_url}{other['links']['sse']}?ticket={ticket}") == 401
    assert await status_of(f"{hub_url}/api/v1/sse/jobs/my?ticket={ticket}") == 401


async def test_a_users_ticket_may_be_bound_to_one_stream(hub_url, api, service):
    job = await new_report(service, "alice")
    alice = api("alice")
    status, body = await alice.post(TICKETS, {"path": job["links"]["poll"]})
    assert status == 201, body
    assert await status_of(f"{hub_url}{job['links']['sse']}?ticket={body['ticket']}") == 200
    assert await status_of(f"{hub_url}/api/v1/poll/jobs/my?ticket={body['ticket']}") == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"user": "alice"}, "path is required"),
        ({"path": "/api/v1/sse/jobs/my"}, "user must be a string"),
        ({"user": "alice", "path": "/api/v1/jobs"}, "path must be an SSE or long-poll path"),
        ({"user": "alice", "path": "/api/v1/sse/jobs/my", "ttl": 5}, "unknown field(s): ttl"),
    ],
)
async def test_a_service_ticket_needs_a_user_and_a_stream(service, body, message):
    status, answer = await service.post(TICKETS, body)
    assert status == 400 and answer["error"] == "bad_request" and message in answer["message"]


async def test_a_user_cannot_buy_a_ticket_for_someone_else(api):
    status, answer = await api("alice").post(TICKETS, {"user": "bob", "path": "/api/v1/sse/jobs/my"})
    assert status == 400 and answer["message"] == "unknown field(s): user"
