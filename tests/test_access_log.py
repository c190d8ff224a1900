"""The access log: one line per request, its path without the query, at a
level that follows the status; the same record any logging setup expects."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from hub.runtime.cli import LOG_FORMAT

pytestmark = pytest.mark.gen_test(timeout=30)

LINE = re.compile(r"\A(\d{3}) (GET|POST) (\S+) \(127\.0\.0\.1\) \d+\.\dms\Z")


async def fetch(url: str) -> int:
    response = await AsyncHTTPClient().fetch(url, raise_error=False)
    return response.code


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "hub.access"]


@pytest.fixture
def restore_record_factory() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


async def test_each_request_is_one_line_with_its_path_status_and_time(app, hub_url, caplog, token):
    caplog.set_level(logging.INFO, logger="hub.access")
    secret = token("alice")
    assert await fetch(f"{hub_url}/healthz?access_token={secret}") == 200
    assert await fetch(f"{hub_url}/no/such/page?ticket=abc") == 404
    records = access_records(caplog)
    assert [LINE.fullmatch(r.getMessage()).groups() for r in records] == [
        ("200", "GET", "/healthz"),
        ("404", "GET", "/no/such/page"),
    ]
    assert [r.levelname for r in records] == ["INFO", "WARNING"]
    assert secret not in caplog.text and "ticket" not in caplog.text
    # Formatted as `hub serve` formats every line.
    line = logging.Formatter(LOG_FORMAT).format(records[0])
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} INFO hub\.access\[{os.getpid()}\]: 200 GET /healthz .*", line
    ), line
    assert records[0].created <= records[1].created


async def test_lines_below_the_level_are_not_made(app, hub_url, caplog):
    caplog.set_level(logging.WARNING, logger="hub.access")
    assert await fetch(f"{hub_url}/healthz") == 200
    assert await fetch(f"{hub_url}/nope") == 404
    assert [r.getMessage().split()[0] for r in access_records(caplog)] == ["404"]


async def test_a_record_factory_of_the_apps_own_is_used(app, hub_url, caplog, restore_record_factory):
    caplog.set_level(logging.INFO, logger="hub.access")
    standard = logging.getLogRecordFactory()

    def traced(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = standard(*args, **kwargs)
        record.trace_id = "abc123"  # what a tracing library adds
        return record

    logging.setLogRecordFactory(traced)
    assert await fetch(f"{hub_url}/healthz") == 200
    records = access_records(caplog)
    assert [getattr(r, "trace_id", None) for r in records] == ["abc123"]
