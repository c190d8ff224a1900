"""A Redis that does not answer reaches the store's users as the hub's own
error, and clients as the contract's 503: the store translates Redis's
exceptions at its edge, and the handlers know only the hub's errors."""

from __future__ import annotations

import ast
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from hub.errors import StoreUnavailable
from hub.runtime.embedded import EmbeddedRedis, free_port
from hub.store.files import JobFiles
from hub.store.history import History, SnapshotCursor
from hub.store.journal import Journal
from hub.store.keys import KeySpace
from hub.store.user_queues import UserQueues
from hub.web.auth import Identity
from hub.web.rate_limit import JobRateLimit
from hub.web.tickets import Tickets
from tests.support import http
from tests.support.environment import ROOT

JOB = "0" * 32


def store_calls(client: Any, blocking: Any, settings: Any) -> dict[str, Callable[[], Any]]:
    """One call of every public store method, on clients that reach no Redis."""
    keys = KeySpace(settings.namespace)
    history = History(client, keys)
    return {
        "Journal.create": lambda: Journal(client, settings).create(JOB, "ada", "character"),
        "Journal.update (blocking)": lambda: Journal(blocking, settings).update(JOB, "ada", "character", progress=5),
        "Journal.next_attempt (blocking)": lambda: Journal(blocking, settings).next_attempt(JOB),
        "History.job": lambda: history.job(JOB),
        "History.jobs_of": lambda: history.jobs_of("ada", 20),
        "History.user_page": lambda: history.user_page("ada", None, 10),
        "History.user_page (later page)": lambda: history.user_page("ada", SnapshotCursor((1, 0), JOB), 10),
        "History.cursor_state": lambda: history.cursor_state(keys.job_events(JOB), (1, 0)),
        "History.after": lambda: history.after(keys.job_events(JOB), (1, 0), 10),
        "JobFiles.read": lambda: JobFiles(client, keys).read(JOB, "image.png"),
        "JobFiles.save (blocking)": lambda: JobFiles(blocking, keys).save(JOB, "a.txt", b"x", "text/plain", 60),
        "UserQueues.submit (blocking)": lambda: UserQueues(blocking, keys, 60).submit("ada", JOB, "q", "m", "{}", 4),
        "UserQueues.release (blocking)": lambda: UserQueues(blocking, keys, 60).release("ada", JOB),
        "UserQueues.waiting_users (blocking)": lambda: UserQueues(blocking, keys, 60).waiting_users(),
        "Tickets.issue": lambda: Tickets(client, keys).issue(Identity(user="ada", expires_at=2e9)),
        "Tickets.redeem": lambda: Tickets(client, keys).redeem("A" * 43, "/api/v1/sse/jobs/my"),
        "JobRateLimit.check": lambda: JobRateLimit(client, keys, 60).check("ada"),
    }


@pytest.mark.gen_test(timeout=60)
async def test_every_store_call_raises_store_unavailable_when_redis_does_not_answer(settings):
    # Given clients of a port nothing listens on
    url = f"redis://127.0.0.1:{free_port()}/0"
    client = AsyncRedis.from_url(url, socket_connect_timeout=1)
    blocking = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        for name, call in store_calls(client, blocking, settings).items():
            # When the store is called, Then it raises the hub's error, never redis-py's
            with pytest.raises(StoreUnavailable) as raised:
                result = call()
                if inspect.isawaitable(result):
                    await result
            assert str(raised.value) == "ConnectionError", name
            assert isinstance(raised.value.__cause__, redis.exceptions.ConnectionError), name
    finally:
        await client.aclose()
        blocking.close()


def answer(url: str, token: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    data = json.dumps(body).encode() if body is not None else None
    return http.request(url, method=method, headers=headers, body=data)


@pytest.mark.gen_test(timeout=90)
async def test_requests_while_redis_is_down_get_503_json_and_one_log_line_each(hub_process, tmp_path, token):
    # Given a hub whose Redis then stops
    server = EmbeddedRedis(str(tmp_path / "redis")).start()
    log_path = tmp_path / "hub.log"
    try:
        hub = hub_process(HUB_REDIS_URL=server.url, HUB_LOG_LEVEL="INFO", output=log_path)
        server.stop()
        bearer = token("olga")
        new_job = {"type": "character", "input": {"name": "Ada"}}
        requests = {
            "create a job (rate limit)": (hub.url + "/api/v1/jobs", "POST", new_job),
            "read a job (history)": (hub.url + f"/api/v1/jobs/{JOB}", "GET", None),
            "read a file (history)": (hub.url + f"/api/v1/jobs/{JOB}/files/image.png", "GET", None),
            "buy a ticket (tickets)": (hub.url + "/api/v1/sse/tickets", "POST", {}),
            # The connection manager's per-user slots call Redis themselves.
            "open /my (connection slots)": (hub.url + "/api/v1/sse/jobs/my", "GET", None),
            "long-poll /my (connection slots)": (hub.url + "/api/v1/poll/jobs/my", "GET", None),
        }
        for what, (url, method, body) in requests.items():
            # When a client asks
            response = await answer(url, bearer, method, body)
            raw = await response.body()
            print(f"\n{what}: {response.status} {raw.decode()}")
            # Then the answer is the contract's 503, with when to try again
            assert response.status == 503, what
            assert response.headers["content-type"].startswith("application/json"), what
            assert json.loads(raw) == {"error": "unavailable", "message": "Redis is not answering; try again shortly"}
            assert response.headers["retry-after"] == "2", what
        # And the log has one warning per request, naming Redis's failure, and no traceback
        log = log_path.read_text(errors="replace")
        lines = re.findall(r"WARNING hub\.http\[\d+\]: (\w+) (\S+) \([^)]*\): Redis unavailable: (\w+)", log)
        assert len(lines) == len(requests), log
        assert {failure for _, _, failure in lines} <= {"ConnectionError", "TimeoutError"}, lines
        assert "Traceback" not in log and "uncaught exception" not in log, log
    finally:
        server.stop()


def test_no_request_handler_imports_redis():
    for path in sorted((ROOT / "hub" / "web" / "handlers").glob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert "redis" not in imported, f"{path.name} imports redis: the store translates its errors"
