"""Liveness and readiness, with Redis up and down."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from hub.runtime.embedded import EmbeddedRedis
from tests.support.waiting import eventually


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.mark.gen_test(timeout=60)
async def test_readyz_follows_redis_and_healthz_does_not(hub_process, tmp_path):
    redis = EmbeddedRedis(str(tmp_path / "redis")).start()
    try:
        hub = hub_process(HUB_REDIS_URL=redis.url)
        assert get(hub.url + "/readyz") == (200, {"status": "ready"})
        assert get(hub.url + "/healthz") == (200, {"status": "ok"})

        redis.kill()
        await eventually(lambda: get(hub.url + "/readyz")[0] == 503)
        assert get(hub.url + "/readyz")[1]["error"] == "unavailable"
        assert get(hub.url + "/healthz")[0] == 200, "the process itself is fine"

        redis.start()
        await eventually(lambda: get(hub.url + "/readyz")[0] == 200, timeout=30)
        assert hub.metric("hub_redis_reconnects_total") >= 1
    finally:
        redis.stop()
