"""The demo page in a real browser (Debian's chromium driven by Playwright):
sign in, start a character job and an image job, and watch both progress bars
reach 100 and the results appear, once over SSE and once over long-poll."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, need

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Generous: a job takes about 1 s at 0.2 s a step, a loaded CI machine more.
WAIT_MS = 30_000

# The endpoints of each transport, to check that the forced one is the one used.
ENDPOINTS = {"eventsource": "/api/v1/sse/jobs/my", "longpoll": "/api/v1/poll/jobs/my"}


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright package is not installed")
        return
    need(Path(CHROMIUM).is_file(), f"no chromium at {CHROMIUM} (set CHROMIUM_PATH)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def warm_up(hub_url: str, timeout: float = 30.0) -> None:
    """Runs one job to the end before the timed runs, so that they measure the
    hub and not the worker's start-up. Waits on the job's long-poll: each
    request returns as soon as the job moves, so no sleep is needed."""
    token = post_json(hub_url + "/api/v1/dev/token", {"user": "warm-up"}, None)["token"]
    job_id = post_json(hub_url + "/api/v1/characters", {"name": "Warm"}, token)["jobId"]
    poll = f"{hub_url}/api/v1/poll/jobs/character/{job_id}"
    cursor = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = f"{poll}?cursor={cursor}" if cursor else poll
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            if answer.status == 204:  # the job's end is behind the cursor
                return
            body = json.load(answer)
        statuses = {event.get("status") for event in body["events"]}
        assert "failed" not in statuses, body
        if "completed" in statuses:
            return
        cursor = body["cursor"]
    raise AssertionError(f"the worker did not finish a job within {timeout}s")


def post_json(url: str, body: dict[str, Any], token: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)


# Notes, on the page's own clock, every click and every change of a progress
# bar: exact times whatever the test's polling, and the bar's whole course.
RECORDER = """() => {
    window.clicks = {};
    window.bars = [];
    document.addEventListener('click', (e) => { window.clicks[e.target.id] = performance.now(); }, true);
    new MutationObserver((records) => {
        for (const record of records) {
            window.bars.push({
                type: record.target.closest('.job').dataset.jobType,
                value: Number(record.target.getAttribute('aria-valuenow')),
                at: performance.now(),
            });
        }
    }).observe(document.getElementById('jobs'), { subtree: true, attributeFilter: ['aria-valuenow'] });
}"""


def bar_course(page: Any, job_type: str, button: str) -> tuple[list[int], float]:
    """The values a job's bar showed, in order and without repeats, and the
    seconds from the click on `button` to the bar's 100."""
    clicks, bars = page.evaluate("() => [window.clicks, window.bars]")
    values: list[int] = []
    full_at = None
    for change in bars:
        if change["type"] != job_type:
            continue
        if not values or values[-1] != change["value"]:
            values.append(change["value"])
        if change["value"] == 100 and full_at is None:
            full_at = change["at"]
    assert full_at is not None, values
    return values, (full_at - clicks[button]) / 1000


@pytest.mark.hub_settings(job_step_seconds=0.2)
@pytest.mark.parametrize("transport", ["eventsource", "longpoll"])
def test_demo_page_shows_jobs_live(hub_process, worker, browser, transport):
    # `browser` after the hub: its teardown runs first, so the page stops polling before the hub stops.
    from playwright.sync_api import expect

    hub = hub_process(dev_tokens=True)
    worker()
    warm_up(hub.url)

    page = browser.new_page(viewport=DESKTOP)
    # What went wrong in the browser, for the failure messages.
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"{request.url}: {request.failure}"))
    page.on("response", lambda answer: answer.status >= 400 and problems.append(f"{answer.status} {answer.url}"))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(hub.url + "/")
    page.fill("#signin-user", "ada")
    page.click("#signin-button")
    try:
        expect(page.locator("#session-user")).to_have_text("ada")
    except AssertionError as error:
        raise AssertionError(f"the page did not sign in; the browser saw {problems}") from error
    connection = page.locator("#connection")
    expect(connection).to_have_attribute("data-state", "open", timeout=WAIT_MS)

    # Forcing a transport closes the `auto` subscription and opens another.
    page.select_option("#transport", transport)
    expect(connection).to_have_attribute("data-transport", transport)
    expect(connection).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    requested.clear()

    # A refused input shows the hub's message, and no card.
    page.fill("#image-prompt", "a lighthouse at dusk")
    page.fill("#image-width", "10")
    page.click("#image-start")
    expect(page.locator("#image-error")).to_have_text("width must be between 64 and 1024")
    expect(page.locator(".job")).to_have_count(0)
    page.fill("#image-width", "384")

    # Both jobs at once: their events share the one /my subscription.
    page.evaluate(RECORDER)
    page.fill("#character-name", "Ada")
    page.fill("#character-description", "curious and brave")
    page.click("#character-start")
    page.click("#image-start")
    character = page.locator('.job[data-job-type="character"]')
    image = page.locator('.job[data-job-type="media"]')
    for card in (character, image):
        expect(card.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100", timeout=WAIT_MS)

    character_values, character_seconds = bar_course(page, "character", "character-start")
    image_values, image_seconds = bar_course(page, "media", "image-start")
    print(
        f"\n[{transport}] click to 100%: character {character_seconds:.2f} s {character_values}, "
        f"image {image_seconds:.2f} s {image_values}"
    )
    # Live: the bar went up step by step (one event per step), never jumped to the end.
    for values in (character_values, image_values):
        assert values == sorted(values) and values[0] == 0 and len(values) >= 5, values

    character = page.locator('.job[data-job-type="character"]')
    expect(character).to_have_attribute("data-status", "completed")
    expect(character.locator(".job-title")).to_have_text("Ada")
    expect(character.locator(".traits li")).to_have_count(3)
    expect(character.locator(".stats dd")).to_have_count(5)
    expect(character.locator(".backstory")).to_contain_text("curious and brave")

    expect(image).to_have_attribute("data-status", "completed")
    page.wait_for_function(
        """() => { const img = document.querySelector('.job[data-job-type="media"] img');
                   return img && img.complete && img.naturalWidth > 0; }""",
        timeout=WAIT_MS,
    )
    assert image.locator("img").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [384, 256]

    # The forced transport, and only it, carried the events.
    other = next(path for name, path in ENDPOINTS.items() if name != transport)
    assert not [url for url in requested if other in url]
    if transport == "longpoll":
        assert [url for url in requested if ENDPOINTS["longpoll"] in url]
    assert not [problem for problem in problems if problem.startswith(("page error", "5"))], problems

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"demo-{transport}.png"), full_page=True, animations="disabled")
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(ARTIFACTS / f"demo-{transport}-phone.png"), full_page=True, animations="disabled")
