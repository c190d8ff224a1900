"""The generic jobs API and services: a user creates a job of any type, a
service creates one for a user and publishes an external job's progress over
HTTP, and the owner follows it as any other job (the contract's "Your own
jobs")."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pytest

from actors import Text, external_job_type
from hub.runtime import cli
from hub.store.events import parse_cursor
from hub.store.settings import Settings
from hub.web.auth import PUBLISH_SCOPE
from tests.support.http import Api, Response, request
from tests.support.metrics import sample
from tests.support.sse import Frame
from tests.support.tokens import SECRET, issue_service_token

pytestmark = pytest.mark.gen_test(timeout=60)

#: A job type an app declares in its own module (this one, named in HUB_APPS).
render = external_job_type("render", input={"scene": Text(required=True, max_length=50)})
APP_TYPES = pytest.mark.hub_settings(apps=("tests.test_service_api",))
#: A job type named in settings alone: any JSON object is its input.
SETTINGS_TYPES = pytest.mark.hub_settings(external_job_types=("report",))
SERVICE = "billing"


@pytest.fixture
def service(hub_url: str, settings: Settings) -> Api:
    """The app's backend, calling with a service token."""
    return Api(hub_url, issue_service_token(settings, SERVICE))


async def create(client: Api, job_type: str, owner: str | None = None, job_input: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": job_type}
    if owner is not None:
        body["owner"] = owner
    if job_input is not None:
        body["input"] = job_input
    status, answer = await client.post("/api/v1/jobs", body)
    assert status == 202, answer
    return dict(answer)


async def publish(service: Api, job_id: str, **update: Any) -> tuple[int, Any]:
    return await service.post(f"/api/v1/jobs/{job_id}/events", update)


async def published(service: Api, job_id: str, **update: Any) -> str:
    status, answer = await publish(service, job_id, **update)
    assert status == 200, answer
    return str(answer["id"])


async def get_json(client: Api, path: str) -> tuple[int, Any]:
    response = await client.get(path)
    assert response.headers["content-type"].startswith("application/json")
    return response.status, await response.json_body()


async def opening(stream: Response) -> list[str | None]:
    """The types of a stream's first two events (after its `retry:`)."""
    types: list[str | None] = []
    while len(types) < 2:
        frame = await stream.frame()
        assert frame is not None
        if frame.data is not None:
            types.append(frame.type)
    return types


def updates(frames: list[Frame]) -> list[Frame]:
    return [frame for frame in frames if frame.type == "job_update"]


# Creating jobs -------------------------------------------------------------------------


async def test_a_user_creates_a_job_of_any_type_and_a_worker_runs_it(api, worker):
    worker()
    alice = api("alice")
    job = await create(alice, "character", job_input={"name": "Ada"})
    job_id = job["jobId"]
    assert job == {
        "jobId": job_id,
        "type": "character",
        "status": "queued",
        "links": {
            "sse": f"/api/v1/sse/jobs/character/{job_id}",
            "poll": f"/api/v1/poll/jobs/character/{job_id}",
            "status": f"/api/v1/characters/jobs/{job_id}",
        },
    }
    stream = await alice.stream(job["links"]["sse"])
    frames = await stream.frames_until_end()
    assert frames[-1].data["status"] == "completed"
    assert frames[-1].data["result"]["name"] == "Ada"
    status, body = await get_json(alice, f"/api/v1/jobs/{job_id}")
    assert status == 200
    assert body["data"]["status"] == "completed" and body["data"]["input"]["name"] == "Ada"
    assert "owner" not in body["data"]


@SETTINGS_TYPES
async def test_a_service_creates_a_job_that_belongs_to_its_owner_alone(api, service):
    job = await create(service, "report", owner="bob", job_input={"month": "may"})
    job_id = job["jobId"]
    assert job["links"]["status"] == f"/api/v1/jobs/{job_id}"
    bob, carol = api("bob"), api("carol")

    status, body = await get_json(bob, f"/api/v1/jobs/{job_id}")
    assert status == 200
    assert body["data"]["status"] == "queued" and body["data"]["input"] == {"month": "may"}
    assert "owner" not in body["data"]
    stream = await bob.stream(job["links"]["sse"])
    assert await opening(stream) == ["connected", "initial_status"]
    stream.close()

    assert (await get_json(carol, f"/api/v1/jobs/{job_id}"))[0] == 404
    assert (await carol.stream(job["links"]["sse"])).status == 404
    assert (await get_json(api(SERVICE), f"/api/v1/jobs/{job_id}"))[0] == 404, "the service's name owns nothing"
    status, body = await get_json(service, f"/api/v1/jobs/{job_id}")
    assert status == 200 and body["data"]["owner"] == "bob" and body["data"]["input"] == {"month": "may"}


@SETTINGS_TYPES
async def test_a_users_own_jobs_are_listed_newest_first_page_by_page(api, service):
    alice = api("alice")
    created = [
        (await create(service, "report", owner="alice"))["jobId"],
        (await create(alice, "character", job_input={"name": "Ada"}))["jobId"],
        (await create(service, "report", owner="alice"))["jobId"],
        (await create(alice, "character", job_input={"name": "Lin"}))["jobId"],
        (await create(service, "report", owner="alice"))["jobId"],
    ]
    await published(service, created[0], status="completed")
    await published(service, created[2], status="failed", failedReason="no data")
    await create(service, "report", owner="bob")

    listed: list[dict[str, Any]] = []
    pages: list[int] = []
    path = "/api/v1/jobs?limit=2"
    while True:
        status, body = await get_json(alice, path)
        assert status == 200
        listed += body["data"]
        pages.append(len(body["data"]))
        if body["next"] is None:
            break
        path = f"/api/v1/jobs?limit=2&before={body['next']}"
    assert [job["jobId"] for job in listed] == created[::-1]
    assert pages == [2, 2, 1]
    assert {job["jobId"]: job["status"] for job in listed}[created[0]] == "completed"
    assert {job["jobId"]: job["status"] for job in listed}[created[2]] == "failed"
    assert [job["input"] for job in listed if job["type"] == "character"] == [
        {"name": "Lin", "description": ""},
        {"name": "Ada", "description": ""},
    ]
    status, body = await get_json(alice, "/api/v1/jobs")
    assert [job["jobId"] for job in body["data"]] == created[::-1] and body["next"] is None
    assert await get_json(api("carol"), "/api/v1/jobs") == (200, {"data": [], "next": None})


# Publishing --------------------------------------------------------------------------


RUN = [
    {"status": "active", "progress": 10, "step": "loading"},
    {"status": "active", "progress": 50, "step": "summing"},
    {"status": "active", "progress": 30, "step": "late and lower"},
    {"status": "completed", "result": {"rows": 3, "total": "12.50"}},
]


@SETTINGS_TYPES
async def test_a_published_run_reaches_the_owner_in_order_and_the_stream_ends(ctx, api, service):
    job = await create(service, "report", owner="bob")
    bob = api("bob")
    stream = await bob.stream(job["links"]["sse"])
    assert await opening(stream) == ["connected", "initial_status"]

    ids = [await published(service, job["jobId"], **update) for update in RUN]
    seen = updates(await stream.frames_until_end())

    assert [frame.id for frame in seen] == ids
    assert [parse_cursor(i) for i in ids] == sorted({parse_cursor(i) for i in ids})
    assert [(f.data["status"], f.data["progress"]) for f in seen] == [
        ("active", 10),
        ("active", 50),
        ("active", 50),  # progress never goes down within an attempt
        ("completed", 100),
    ]
    assert seen[0].data["attempt"] == 1 and seen[0].data["startedAt"]
    assert "startedAt" not in seen[1].data
    assert seen[-1].data["result"] == {"rows": 3, "total": "12.50"} and seen[-1].data["completedAt"]
    state = (await get_json(bob, f"/api/v1/jobs/{job['jobId']}"))[1]["data"]
    assert state["status"] == "completed" and state["progress"] == 100 and state["attempt"] == 1
    assert state["startedAt"] <= state["completedAt"]
    assert sample(ctx, "hub_events_published_total", source="http", status="active") == 3
    assert sample(ctx, "hub_events_published_total", source="http", status="completed") == 1


@SETTINGS_TYPES
async def test_a_resume_mid_run_gets_exactly_the_rest(api, service):
    job = await create(service, "report", owner="bob")
    ids = [await published(service, job["jobId"], **update) for update in RUN]
    bob = api("bob")

    rest = updates(await (await bob.stream(job["links"]["sse"], last_event_id=ids[1])).frames_until_end())
    assert [frame.id for frame in rest] == ids[2:]
    assert [frame.data["status"] for frame in rest] == ["active", "completed"]
    assert (await bob.stream(job["links"]["sse"], last_event_id=ids[-1])).status == 204
    status, body = await get_json(bob, f"{job['links']['poll']}?cursor={ids[0]}")
    assert status == 200 and [event["id"] for event in body["events"]] == ids[1:]


@SETTINGS_TYPES
async def test_a_failed_update_carries_its_reason_and_the_error(api, service):
    job = await create(service, "report", owner="bob")
    stream = await api("bob").stream(job["links"]["sse"])
    await published(service, job["jobId"], status="active", progress=40)
    await published(service, job["jobId"], status="failed", failedReason="the source went away")
    final = updates(await stream.frames_until_end())[-1].data
    assert final["status"] == "failed" and final["progress"] == 40
    assert final["failedReason"] == "the source went away"
    assert final["result"] == {"error": "the source went away"} and final["completedAt"]


@SETTINGS_TYPES
@pytest.mark.parametrize("terminal", [{"status": "completed"}, {"status": "failed"}])
async def test_publishing_after_the_end_is_409_job_finished(service, terminal):
    job_id = (await create(service, "report", owner="bob"))["jobId"]
    await published(service, job_id, **terminal)
    for update in ({"status": "active", "progress": 90}, {"status": "completed"}, {"status": "failed"}):
        status, body = await publish(service, job_id, **update)
        assert (status, body["error"]) == (409, "job_finished"), update


@SETTINGS_TYPES
async def test_publishers_racing_to_end_a_job_end_it_once(api, service):
    job = await create(service, "report", owner="bob")
    stream = await api("bob").stream(job["links"]["sse"])
    answers = await asyncio.gather(
        *(publish(service, job["jobId"], status=status) for status in ("completed", "failed") * 4)
    )
    assert sorted(status for status, _ in answers) == [200] + [409] * 7
    assert {body["error"] for status, body in answers if status == 409} == {"job_finished"}
    assert len(updates(await stream.frames_until_end())) == 1


async def test_publishing_to_a_job_that_is_not_external_is_409_not_external(ctx, api, service):
    actor_job = (await create(api("alice"), "character", job_input={"name": "Ada"}))["jobId"]
    await ctx.journal.create("gone1", "alice", "unregistered", external=True)
    for job_id in (actor_job, "gone1"):
        status, body = await publish(service, job_id, status="active")
        assert (status, body["error"]) == (409, "not_external"), job_id
    status, body = await get_json(api("alice"), f"/api/v1/jobs/{actor_job}")
    assert body["data"]["status"] == "queued", "nothing was published"


@pytest.mark.parametrize("job_id", ["no-such-job", "a%20b", "x" * 65])
async def test_publishing_to_an_unknown_job_is_404(service, job_id):
    status, body = await publish(service, job_id, status="active")
    assert (status, body["error"]) == (404, "not_found")


# Who may do what -----------------------------------------------------------------------


@SETTINGS_TYPES
async def test_a_users_token_can_never_publish_nor_act_as_a_service(api, service):
    job_id = (await create(service, "report", owner="alice"))["jobId"]
    alice = api("alice")
    for call in (
        publish(alice, job_id, status="active"),
        alice.post("/api/v1/jobs", {"type": "character", "owner": "alice", "input": {"name": "Ada"}}),
        alice.post("/api/v1/jobs", {"type": "report", "owner": "bob"}),
    ):
        status, body = await call
        assert (status, body["error"]) == (403, "forbidden") and body["message"]
    status, body = await alice.post("/api/v1/jobs", {"type": "report"})
    assert (status, body["error"]) == (403, "forbidden")
    assert "service token" in body["message"], "says who creates external jobs"
    # A token whose scope merely mentions the words is still a user's.
    for scope in ("hub:publisher", "hub publish", ["hub:publish"]):
        claims = {"sub": "mallory", "exp": 9_999_999_999, "scope": scope}
        mallory = Api(alice.base_url, jwt.encode(claims, SECRET, algorithm="HS256"))
        assert (await publish(mallory, job_id, status="active"))[0] == 403, scope


SERVICE_REFUSED = [
    ("GET", "/api/v1/sse/jobs/my"),
    ("GET", "/api/v1/sse/jobs/character/{job}"),
    ("GET", "/api/v1/poll/jobs/my"),
    ("GET", "/api/v1/poll/jobs/character/{job}"),
    ("GET", "/api/v1/characters/jobs/{job}"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{job}/files/image.png"),
]


@pytest.mark.parametrize("method,path", SERVICE_REFUSED)
async def test_a_service_token_opens_no_users_stream_or_data(ctx, hub_url, service, method, path):
    # Even a job whose owner has the service's own name.
    await ctx.journal.create("j1", SERVICE, "character")
    response = await request(hub_url + path.format(job="j1"), method, service.auth())
    assert response.status == 403 and response.headers["content-type"].startswith("application/json")
    body = await response.json_body()
    assert body["error"] == "forbidden" and body["message"]


async def test_a_service_token_is_taken_from_the_header_only(ctx, hub_url, service):
    await ctx.journal.create("j1", "bob", "character")
    for headers, query in (({}, f"?access_token={service.token}"), ({"Cookie": f"hub_token={service.token}"}, "")):
        response = await request(f"{hub_url}/api/v1/jobs/j1{query}", headers=headers)
        assert response.status == 403, (headers, query)
    before = sample(ctx, "hub_connections_rejected_total", reason="forbidden")
    response = await request(f"{hub_url}/api/v1/sse/jobs/character/j1?access_token={service.token}")
    assert response.status == 403
    assert sample(ctx, "hub_connections_rejected_total", reason="forbidden") == before + 1


# Bad requests ----------------------------------------------------------------------------

BAD_CREATES = [
    ("user", {}, "type is required"),
    ("user", {"type": 7}, "type is required"),
    ("user", {"type": "nope"}, "unknown job type"),
    ("user", {"type": "character", "input": {"name": 7}}, "name must be a string"),
    ("user", {"type": "character", "input": {}}, "name is required"),
    ("user", {"type": "character", "input": [1]}, "input must be a JSON object"),
    ("user", {"type": "character", "input": {"name": "Ada"}, "colour": "red"}, "unknown field(s): colour"),
    ("service", {"type": "report"}, "owner is required"),
    ("service", {"type": "report", "owner": None}, "owner is required"),
    ("service", {"type": "report", "owner": ""}, "owner must be 1 to 256 characters"),
    ("service", {"type": "report", "owner": "b" * 257}, "owner must be 1 to 256 characters"),
    ("service", {"type": "report", "owner": 7}, "owner must be a string"),
    ("service", {"type": "report", "owner": "b\u0000ob"}, "owner must not contain NUL characters"),
    ("service", {"type": "report", "owner": "b\ud800ob"}, "owner must be valid Unicode text"),
    ("service", {"type": "report", "owner": "bob", "input": "x"}, "input must be a JSON object"),
    ("service", {"type": "nope", "owner": "bob"}, "unknown job type"),
]


@SETTINGS_TYPES
@pytest.mark.parametrize("caller,body,message", BAD_CREATES)
async def test_a_bad_job_creation_is_a_400_that_says_why(api, service, caller, body, message):
    client = service if caller == "service" else api("alice")
    status, answer = await client.post("/api/v1/jobs", body)
    assert status == 400 and answer["error"] == "bad_request"
    assert message in answer["message"]


async def test_an_owner_at_the_limits_is_fine(service, api):
    for owner in ("b" * 256, "\U0001f98a fox", "user:42/with spaces"):
        job = await create(service, "character", owner=owner, job_input={"name": "Ada"})
        status, body = await get_json(service, f"/api/v1/jobs/{job['jobId']}")
        assert status == 200 and body["data"]["owner"] == owner


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


BAD_UPDATES = [
    ({}, "status must be one of: active, completed, failed"),
    ({"status": "retrying"}, "status must be one of"),
    ({"status": "queued"}, "status must be one of"),
    ({"status": "active", "progress": 101}, "progress must be between 0 and 100"),
    ({"status": "active", "progress": -1}, "progress must be between 0 and 100"),
    ({"status": "active", "progress": "50"}, "progress must be an integer"),
    ({"status": "active", "progress": 50.5}, "progress must be an integer"),
    ({"status": "active", "progress": True}, "progress must be an integer"),
    ({"status": "active", "step": "s" * 201}, "step must be 0 to 200 characters"),
    ({"status": "active", "step": 3}, "step must be a string"),
    ({"status": "active", "result": {"x": 1}}, "result is for a completed job only"),
    ({"status": "failed", "result": {"x": 1}}, "result is for a completed job only"),
    ({"status": "completed", "failedReason": "x"}, "failedReason is for a failed job only"),
    ({"status": "failed", "failedReason": "r" * 501}, "failedReason must be 0 to 500 characters"),
    ({"status": "completed", "result": [1]}, "result must be a JSON object"),
    ({"status": "completed", "result": nested(33)}, "result is nested deeper than 32 levels"),
    ({"status": "completed", "result": {"text": "\udfff"}}, "result must be valid Unicode text"),
    ({"status": "active", "percent": 5}, "unknown field(s): percent"),
]


@SETTINGS_TYPES
@pytest.mark.parametrize("update,message", BAD_UPDATES)
async def test_a_bad_update_is_a_400_and_changes_nothing(api, service, update, message):
    job_id = (await create(service, "report", owner="bob"))["jobId"]
    status, answer = await publish(service, job_id, **update)
    assert (status, answer["error"]) == (400, "bad_request")
    assert message in answer["message"]
    assert (await get_json(service, f"/api/v1/jobs/{job_id}"))[1]["data"]["status"] == "queued"


@SETTINGS_TYPES
async def test_updates_at_the_limits_are_accepted(service):
    job_id = (await create(service, "report", owner="bob"))["jobId"]
    await published(service, job_id, status="active", progress=0, step="s" * 200)
    await published(service, job_id, status="active", progress=100, step=None)
    await published(service, job_id, status="completed", result=nested(32))
    job = (await get_json(service, f"/api/v1/jobs/{job_id}"))[1]["data"]
    assert (job["status"], job["progress"], job["result"]) == ("completed", 100, nested(32))


BAD_PAGES = [
    "limit=0",
    "limit=101",
    "limit=abc",
    "limit=-1",
    "limit=",
    "limit=2.5",
    "before=x",
    "before=123-456",
    "before=",
    "before=" + "0" * 18 + "1-" + "0" * 20,
    "before=" + "0" * 20 + "-" + "0" * 21,
]


@pytest.mark.parametrize("query", BAD_PAGES)
async def test_a_bad_page_is_a_400(api, query):
    status, body = await get_json(api("alice"), f"/api/v1/jobs?{query}")
    assert (status, body["error"]) == (400, "bad_request")


# Job types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job_type,good_input,bad_input,message",
    [
        pytest.param("report", {"any": ["thing"]}, [1], "input must be a JSON object", marks=SETTINGS_TYPES),
        pytest.param("render", {"scene": "a fox"}, {"scene": 7}, "scene must be a string", marks=APP_TYPES),
    ],
)
async def test_an_external_type_comes_from_settings_or_an_app(
    hub_url, api, service, job_type, good_input, bad_input, message
):
    types = {
        entry["type"]: entry for entry in (await (await request(hub_url + "/api/v1/job-types")).json_body())["data"]
    }
    assert types[job_type]["runner"] == "external" and types[job_type]["create"] == "/api/v1/jobs"
    assert types["character"]["runner"] == "actor"

    status, body = await service.post("/api/v1/jobs", {"type": job_type, "owner": "bob", "input": bad_input})
    assert (status, body) == (400, {"error": "bad_request", "message": message})
    job = await create(service, job_type, owner="bob", job_input=good_input)
    stream = await api("bob").stream(job["links"]["sse"])
    await published(service, job["jobId"], status="completed", result={"ok": True})
    assert updates(await stream.frames_until_end())[-1].data["result"] == {"ok": True}


@APP_TYPES
async def test_the_job_types_describe_their_input_to_anyone(hub_url):
    response = await request(hub_url + "/api/v1/job-types")
    assert response.status == 200
    types = {entry["type"]: entry for entry in (await response.json_body())["data"]}
    assert set(types) == {"character", "media", "render"}
    assert types["render"]["input"]["required"] == ["scene"]
    assert types["render"]["input"]["properties"]["scene"]["maxLength"] == 50
    assert types["character"]["create"] == "/api/v1/characters"


# Stalls -------------------------------------------------------------------------------

STALL = "stalled: no update for 2 s (its publisher may have stopped)"


@pytest.mark.parametrize("publishes", [True, False], ids=["went-silent", "never-started"])
async def test_a_silent_external_job_fails_as_stalled_once(hub_process, settings, sync_redis, token, publishes):
    hub = hub_process(HUB_EXTERNAL_JOB_TYPES="report", HUB_JOB_STALL_SECONDS="2")
    service = Api(hub.url, issue_service_token(settings, SERVICE))
    bob = Api(hub.url, token("bob"))
    job = await create(service, "report", owner="bob")
    stream = await bob.stream(job["links"]["sse"])
    if publishes:
        await published(service, job["jobId"], status="active", progress=20)

    seen = updates(await stream.frames_until_end(timeout=30))
    assert [frame.data["status"] for frame in seen] == (["active", "failed"] if publishes else ["failed"])
    assert seen[-1].data["failedReason"] == STALL
    assert seen[-1].data["result"] == {"error": STALL}
    history = sync_redis.xrange(f"{settings.namespace}:job:{job['jobId']}:events")
    assert [b'"status":"failed"' in fields[b"d"] for _, fields in history].count(True) == 1
    assert (await publish(service, job["jobId"], status="active"))[0] == 409
    assert hub.stop() == 0, "the hub stops its stall watcher and drains cleanly"


# The token command ----------------------------------------------------------------------


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.setenv("HUB_JWT_SECRET", SECRET)
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    "argv,sub,scope",
    [(["token", "--service", "billing"], "billing", PUBLISH_SCOPE), (["token", "--user", "alice"], "alice", None)],
)
def test_hub_token_prints_a_service_or_a_user_token(monkeypatch, capsys, argv, sub, scope):
    code, printed = run_cli([*argv, "--ttl", "120"], monkeypatch, capsys)
    assert code == 0
    claims = jwt.decode(printed, SECRET, algorithms=["HS256"])
    assert claims["sub"] == sub and claims.get("scope") == scope
    assert claims["exp"] - claims["iat"] == 120


@pytest.mark.parametrize("argv", [["token"], ["token", "--user", "alice", "--service", "billing"]])
def test_hub_token_wants_exactly_one_of_user_or_service(monkeypatch, capsys, argv):
    assert run_cli(argv, monkeypatch, capsys)[0] == 2


async def test_a_printed_service_token_creates_jobs_for_users(hub_url, api, monkeypatch, capsys):
    code, printed = run_cli(["token", "--service", "billing"], monkeypatch, capsys)
    assert code == 0
    job = await create(Api(hub_url, printed), "character", owner="dana", job_input={"name": "Ada"})
    status, body = await get_json(api("dana"), f"/api/v1/jobs/{job['jobId']}")
    assert status == 200 and body["data"]["input"]["name"] == "Ada"
