"""The demo's token endpoint exists under `hub up` only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_dev_token_endpoint_exists_only_when_asked_for(hub_process):
    production = hub_process()
    assert post(production.url + "/api/v1/dev/token", {"user": "eve"}) == (
        404,
        {"error": "not_found", "message": "no such resource"},
    )
    demo = hub_process(dev_tokens=True)
    status, body = post(demo.url + "/api/v1/dev/token", {"user": "ada"})
    assert status == 200 and body["user"] == "ada"
    request = urllib.request.Request(
        demo.url + "/api/v1/poll/jobs/my", headers={"Authorization": f"Bearer {body['token']}"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert json.load(answer) == {"events": [], "cursor": "0-0"}
    assert post(demo.url + "/api/v1/dev/token", {"user": "a b"})[0] == 400
