"""The demo page in a real browser (Debian's chromium driven by Playwright):
its forms come from the hub's job types; sign in, start a character job and
an image job, and watch both progress bars reach 100 and the results appear,
once over SSE and once over long-poll; reload mid-job and after the end, and
find every job again with its right state, on a phone."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from hub.store.settings import Settings
from hub.web.auth import issue_token
from tests.support.app_origin import Answer, AppOrigin
from tests.support.app_worker import AppWorker
from tests.support.environment import ROOT
from tests.support.tokens import issue_service_token

ARTIFACTS = ROOT / "test-artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Generous: a job takes about 1 s at 0.2 s a step, a loaded CI machine more.
WAIT_MS = 30_000
#: A job type whose progress the test publishes itself, as an app's worker would.
EXTERNAL = "report"

# The endpoints of each transport, to check that the forced one is the one used.
ENDPOINTS = {"eventsource": "/api/v1/sse/jobs/my", "longpoll": "/api/v1/poll/jobs/my"}


def call(url: str, body: dict[str, Any] | None, token: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, headers)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)


def warm_up(hub_url: str, timeout: float = 30.0) -> None:
    """Runs one job to the end before the timed runs, so that they measure the
    hub and not the worker's start-up. Waits on the job's long-poll: each
    request returns as soon as the job moves, so no sleep is needed."""
    token = call(hub_url + "/api/v1/dev/token", {"user": "warm-up"}, None)["token"]
    job = call(hub_url + "/api/v1/jobs", {"type": "character", "input": {"name": "Warm"}}, token)
    poll = hub_url + job["links"]["poll"]
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


def open_page(browser: Any, hub_url: str, viewport: dict[str, int]) -> tuple[Any, list[str], list[str]]:
    """A page on the hub, with what went wrong in it and every URL it asked for."""
    page = browser.new_page(viewport=viewport)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"{request.url}: {request.failure}"))
    page.on("response", lambda answer: answer.status >= 400 and problems.append(f"{answer.status} {answer.url}"))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(hub_url + "/")
    return page, problems, requested


def sign_in(page: Any, user: str, problems: list[str]) -> None:
    from playwright.sync_api import expect

    page.fill("#signin-user", user)
    page.click("#signin-button")
    try:
        expect(page.locator("#session-user")).to_have_text(user)
    except AssertionError as error:
        raise AssertionError(f"the page did not sign in; the browser saw {problems}") from error
    expect(page.locator("#connection")).to_have_attribute("data-state", "open", timeout=WAIT_MS)


def fits_the_screen(page: Any) -> bool:
    return bool(page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"))


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

# True once the card's image has been drawn; and where it came from.
IMAGE_SHOWN = """(card) => { const img = card.querySelector('img');
                             return img && img.complete && img.naturalWidth > 0 ? img.src : null; }"""


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

    hub = hub_process(dev_tokens=True, HUB_EXTERNAL_JOB_TYPES=EXTERNAL)
    worker()
    warm_up(hub.url)
    page, problems, requested = open_page(browser, hub.url, DESKTOP)
    sign_in(page, "ada", problems)
    connection = page.locator("#connection")

    # A form for each type the hub runs, built from its schema; the external one is listed only.
    user_token = call(hub.url + "/api/v1/dev/token", {"user": "ada"}, None)["token"]
    described = call(hub.url + "/api/v1/job-types", None, user_token)["data"]
    runnable = sorted(t["type"] for t in described if t["runner"] == "actor")
    forms = page.locator("#job-forms form")
    expect(forms).to_have_count(len(runnable))
    assert sorted(forms.evaluate_all("forms => forms.map((f) => f.dataset.jobType)")) == runnable
    expect(page.locator("#external-list li")).to_have_count(1)
    expect(page.locator(f'#external-list li[data-job-type="{EXTERNAL}"]')).to_be_visible()
    expect(page.locator(f'form[data-job-type="{EXTERNAL}"]')).to_have_count(0)
    expect(page.locator("#media-width")).to_have_attribute("type", "number")
    expect(page.locator("label[for=character-description]")).to_contain_text("optional")

    # Forcing a transport closes the `auto` subscription and opens another.
    page.select_option("#transport", transport)
    expect(connection).to_have_attribute("data-transport", transport)
    expect(connection).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    requested.clear()

    # A refused input shows the hub's message, and no card.
    page.fill("#media-prompt", "a lighthouse at dusk")
    page.fill("#media-width", "10")
    page.click("#media-start")
    expect(page.locator("#media-error")).to_have_text("width must be between 64 and 1024")
    expect(page.locator(".job")).to_have_count(0)
    page.fill("#media-width", "384")
    page.fill("#media-height", "256")

    # Both jobs at once: their events share the one /my subscription.
    page.evaluate(RECORDER)
    page.fill("#character-name", "Ada")
    page.fill("#character-description", "curious and brave")
    page.click("#character-start")
    page.click("#media-start")
    expect(page.locator("#media-error")).to_be_hidden()
    character = page.locator('.job[data-job-type="character"]')
    image = page.locator('.job[data-job-type="media"]')
    for card in (character, image):
        expect(card.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100", timeout=WAIT_MS)

    character_values, character_seconds = bar_course(page, "character", "character-start")
    image_values, image_seconds = bar_course(page, "media", "media-start")
    print(
        f"\n[{transport}] click to 100%: character {character_seconds:.2f} s {character_values}, "
        f"image {image_seconds:.2f} s {image_values}"
    )
    # Live: the bar went up step by step (one event per step), never jumped to the end.
    for values in (character_values, image_values):
        assert values == sorted(values) and values[0] == 0 and len(values) >= 5, values

    # Each result drawn by its type's view hints: the summary as text, the image as an image.
    expect(character).to_have_attribute("data-status", "completed")
    expect(character.locator(".job-kind")).to_have_text("Character")
    expect(character.locator(".job-title")).to_have_text("Ada")
    expect(character.locator(".job-summary")).to_contain_text("curious and brave")
    expect(character.locator(".job-details dt").first).to_be_attached()

    expect(image).to_have_attribute("data-status", "completed")
    expect(image.locator(".job-kind")).to_have_text("Image")
    expect(image.locator(".job-title")).to_have_text("a lighthouse at dusk")
    page.wait_for_function(IMAGE_SHOWN, arg=image.element_handle(), timeout=WAIT_MS)
    assert image.locator("img").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [384, 256]
    # The image came with the token in a header: neither its URL nor any other holds the token.
    assert image.locator("img").get_attribute("src").startswith("blob:")
    assert [url for url in requested if "/files/" in url and "access_token" not in url]
    assert not [url for url in requested if "/files/" in url and "access_token" in url]

    # The forced transport, and only it, carried the events.
    other = next(path for name, path in ENDPOINTS.items() if name != transport)
    assert not [url for url in requested if other in url]
    if transport == "longpoll":
        assert [url for url in requested if ENDPOINTS["longpoll"] in url]
    assert not [problem for problem in problems if problem.startswith(("page error", "5"))], problems

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"demo-{transport}.png"), full_page=True, animations="disabled")
    page.set_viewport_size(PHONE)
    assert fits_the_screen(page), "nothing wider than a 390 px phone"
    page.screenshot(path=str(ARTIFACTS / f"demo-{transport}-phone.png"), full_page=True, animations="disabled")


@pytest.mark.hub_settings(job_step_seconds=0.2)
def test_demo_page_keeps_the_jobs_across_reloads(hub_process, worker, browser, settings):
    """On a phone: jobs started, the page reloaded while they run and again
    after they ended; every card is back each time, with its right state."""
    from playwright.sync_api import expect

    hub = hub_process(dev_tokens=True, HUB_EXTERNAL_JOB_TYPES=EXTERNAL)
    worker()
    page, problems, _ = open_page(browser, hub.url, PHONE)
    sign_in(page, "ada", problems)

    # An external job that the test moves on itself, as the app's worker would: mid-job for sure.
    service = issue_service_token(settings, "report-worker")
    report = call(hub.url + "/api/v1/jobs", {"type": EXTERNAL, "owner": "ada"}, service)["jobId"]
    publish = f"{hub.url}/api/v1/jobs/{report}/events"
    call(publish, {"status": "active", "progress": 40, "step": "counting"}, service)
    # And one that ended in failure before the page looked.
    broken = call(hub.url + "/api/v1/jobs", {"type": EXTERNAL, "owner": "ada"}, service)["jobId"]
    call(f"{hub.url}/api/v1/jobs/{broken}/events", {"status": "failed", "failedReason": "printer on fire"}, service)

    page.fill("#character-name", "Ada")
    page.fill("#character-description", "curious and brave")
    page.click("#character-start")
    page.fill("#media-prompt", "a fox at dawn")
    page.fill("#media-width", "128")
    page.fill("#media-height", "96")
    page.click("#media-start")
    cards = page.locator(".job")
    expect(cards).to_have_count(4)
    before = cards.evaluate_all("cards => cards.map((c) => c.dataset.jobId)")

    def card(job_id: str) -> Any:
        return page.locator(f'.job[data-job-id="{job_id}"]')

    # Reload while the jobs run: the same cards, newest first, and they go on live.
    page.reload()
    expect(page.locator("#session-user")).to_have_text("ada")
    expect(cards).to_have_count(4, timeout=WAIT_MS)
    assert cards.evaluate_all("cards => cards.map((c) => c.dataset.jobId)") == before
    expect(card(report)).to_have_attribute("data-status", "active")
    expect(card(report).get_by_role("progressbar")).to_have_attribute("aria-valuenow", "40")
    expect(card(report).locator(".job-step")).to_have_text("step: counting")
    expect(card(broken)).to_have_attribute("data-status", "failed")
    expect(card(broken).locator(".job-error")).to_have_text("printer on fire")
    call(publish, {"status": "active", "progress": 80, "step": "checking"}, service)
    expect(card(report).get_by_role("progressbar")).to_have_attribute("aria-valuenow", "80")
    result = {"title": "Weekly report", "pages": 3, "sections": ["sales", "support"]}
    call(publish, {"status": "completed", "progress": 100, "result": result}, service)
    for job_id in before:
        if job_id != broken:
            expect(card(job_id)).to_have_attribute("data-status", "completed", timeout=WAIT_MS)

    # Reload after the end: every card with its final state and its result.
    page.reload()
    expect(cards).to_have_count(4, timeout=WAIT_MS)
    assert cards.evaluate_all("cards => cards.map((c) => c.dataset.jobId)") == before
    character = page.locator('.job[data-job-type="character"]')
    expect(character).to_have_attribute("data-status", "completed")
    expect(character.locator(".job-title")).to_have_text("Ada")
    expect(character.locator(".job-summary")).to_contain_text("curious and brave")
    image = page.locator('.job[data-job-type="media"]')
    expect(image).to_have_attribute("data-status", "completed")
    assert page.wait_for_function(IMAGE_SHOWN, arg=image.element_handle(), timeout=WAIT_MS)
    assert image.locator("img").get_attribute("src").startswith("blob:")
    expect(card(report)).to_have_attribute("data-status", "completed")
    expect(card(report).get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    # A type without view hints for its result: the fields, compactly.
    fields = card(report).locator(".kv div")
    expect(fields).to_have_count(3)
    sections = fields.filter(has=page.locator("dt", has_text="Sections"))
    expect(sections.locator("dd")).to_have_text("sales, support")
    expect(card(broken)).to_have_attribute("data-status", "failed")
    expect(card(broken).locator(".job-error")).to_have_text("printer on fire")

    assert fits_the_screen(page), "nothing wider than a 390 px phone"
    assert not [problem for problem in problems if problem.startswith(("page error", "5"))], problems
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-reloaded-phone.png"), full_page=True, animations="disabled")


def session_token(page: Any) -> str:
    """The token the page signed in with (it keeps it in sessionStorage)."""
    return str(page.evaluate("() => JSON.parse(sessionStorage.getItem('hub-demo-session')).token"))


@pytest.mark.hub_settings(job_step_seconds=0.05)
def test_the_demo_page_puts_the_token_in_no_url(hub_process, worker, browser):
    """A whole visit: sign in, both jobs with their image, a switch to
    long-poll and back to SSE, a reload. Every URL the page asked for is
    recorded: none holds the token (its images come as blobs, its /my stream
    with a ticket over SSE and with the header over long-poll)."""
    from playwright.sync_api import expect

    hub = hub_process(dev_tokens=True)
    worker()
    page, problems, requested = open_page(browser, hub.url, DESKTOP)
    sign_in(page, "ada", problems)
    token = session_token(page)

    page.fill("#character-name", "Ada")
    page.click("#character-start")
    page.fill("#media-prompt", "a quiet harbour")
    page.click("#media-start")
    image = page.locator('.job[data-job-type="media"]')
    expect(image).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    page.wait_for_function(IMAGE_SHOWN, arg=image.element_handle(), timeout=WAIT_MS)

    connection = page.locator("#connection")
    page.select_option("#transport", "longpoll")
    expect(connection).to_have_attribute("data-transport", "longpoll")
    expect(connection).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    page.fill("#character-name", "Polled")
    page.click("#character-start")
    expect(page.locator('.job[data-status="completed"]')).to_have_count(3, timeout=WAIT_MS)
    page.select_option("#transport", "eventsource")
    expect(connection).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    page.reload()
    expect(page.locator('.job[data-status="completed"]')).to_have_count(3, timeout=WAIT_MS)
    page.wait_for_function(IMAGE_SHOWN, arg=image.element_handle(), timeout=WAIT_MS)

    signature = token.rsplit(".", 1)[-1]
    leaks = [url for url in requested if "access_token" in url or token in url or signature in url]
    streams = [url for url in requested if "/api/v1/sse/jobs/my" in url]
    polls = [url for url in requested if "/api/v1/poll/jobs/my" in url]
    files = [url for url in requested if "/files/" in url]
    print(
        f"\n{len(requested)} requests: {len(streams)} SSE (ticketed: {sum('ticket=' in u for u in streams)}), "
        f"{len(polls)} long-polls, {len(files)} files; with the token: {len(leaks)}"
    )
    assert leaks == []
    assert streams and all("ticket=" in url for url in streams), streams
    assert polls and files
    assert not [problem for problem in problems if problem.startswith(("page error", "5"))], problems


# In the viewport: the whole card between the top and the bottom of the screen.
IN_VIEW = """(card) => { const box = card.getBoundingClientRect();
                         return box.top >= 0 && box.bottom <= window.innerHeight && box.height > 0; }"""


def signed_in_page(browser: Any, url: str, settings: Settings, user: str, viewport: dict[str, int]) -> Any:
    """A page already signed in as `user` (its session as the page keeps it),
    whatever the hub: no demo token endpoint is needed."""
    session = json.dumps({"token": issue_token(settings, user, ttl_seconds=600), "user": user})
    page = browser.new_page(viewport=viewport)
    page.add_init_script(f"sessionStorage.setItem('hub-demo-session', {json.dumps(session)})")
    page.goto(url + "/")
    return page


def test_on_a_phone_a_new_job_is_scrolled_into_view(hub_process, browser, settings):
    """The forms fill a phone's screen: the card of a job just started is
    below them. The page brings it into view, for each job started."""
    from playwright.sync_api import expect

    hub = hub_process()
    page = signed_in_page(browser, hub.url, settings, "ada", PHONE)
    expect(page.locator("#connection")).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    for form, fill, value in (("character", "#character-name", "Ada"), ("media", "#media-prompt", "a red kite")):
        page.fill(fill, value)
        page.click(f"#{form}-start")
        card = page.locator(f'.job[data-job-type="{form}"]')
        expect(card).to_have_count(1)
        appeared = time.monotonic()
        top = card.evaluate("card => Math.round(card.getBoundingClientRect().top)")
        try:
            page.wait_for_function(IN_VIEW, arg=card.element_handle(), timeout=3000)
        except Exception as error:
            raise AssertionError(f"the {form} card stayed at y={top} px on a {PHONE['height']} px screen") from error
        print(f"\n{form}: the card appeared at y={top} px, in view {time.monotonic() - appeared:.2f} s later")
        page.screenshot(path=str(ARTIFACTS / f"demo-phone-new-{form}-job.png"), animations="disabled")
    assert fits_the_screen(page)


def on_a_phone(page: Any, state: str, *, full_page: bool = True) -> None:
    """Saves the page as a 390 px phone shows it, into test-artifacts/ (the
    whole page, or what the screen shows), and checks that nothing on it is
    wider than the phone."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = str(ARTIFACTS / f"demo-phone-{state}.png")
    page.screenshot(path=path, full_page=full_page, animations="disabled")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{state}: the page is {width} px wide on a {PHONE['width']} px phone"


# Text without a break opportunity, as a worker may report it: a card must wrap it, not widen the page.
LONG_STEP = "reconciling-" + "quarterly_ledgers_" * 8
LONG_REASON = "upstream refused: https://reports.example.com/" + "a1b2c3d4" * 20


def test_on_a_phone_every_state_of_the_demo_page_fits_the_screen(hub_process, browser, settings):
    """The whole life of the page at 390x844, a screenshot of each state:
    signed out, no jobs yet, jobs running, their results, the history after
    a reload, the hub unreachable mid-job (every connection cut, new ones
    held: a banner says so within seconds and the running job's card says its
    state is unknown), and the hub back (both go, and what happened meanwhile
    shows). The jobs are of an external type that the test moves on itself,
    as an app's worker would: the page knows no type by name."""
    from playwright.sync_api import expect

    from tests.support.tcp_proxy import TcpProxy

    hub = hub_process(HUB_EXTERNAL_JOB_TYPES=EXTERNAL)
    worker = AppWorker(hub.url, issue_service_token(settings, "report-worker"), EXTERNAL)
    publish = worker.publish

    with TcpProxy(hub.port) as proxy:
        page, problems, _ = open_page(browser, proxy.url, PHONE)
        expect(page.locator("#signin-form")).to_be_visible()
        on_a_phone(page, "1-signed-out")

        # Signed in as the app would sign its user in: with a token its backend signed (the demo's
        # own sign-in answers the hub's own origin only, and this page is behind the proxy).
        session = {"token": issue_token(settings, "ada", ttl_seconds=600), "user": "ada"}
        page.evaluate("(session) => sessionStorage.setItem('hub-demo-session', JSON.stringify(session))", session)
        page.reload()
        expect(page.locator("#session-user")).to_have_text("ada")
        expect(page.locator("#jobs-empty")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#jobs-loading")).to_be_hidden()
        expect(page.locator(f'#external-list li[data-job-type="{EXTERNAL}"]')).to_be_visible()
        on_a_phone(page, "2-no-jobs")

        running, done, broken = worker.start("ada"), worker.start("ada"), worker.start("ada")
        publish(running, status="active", progress=40, step="counting")
        publish(done, status="active", progress=70, step=LONG_STEP)
        publish(broken, status="active", progress=20, step="collecting")
        cards = page.locator(".job")
        expect(cards).to_have_count(3, timeout=WAIT_MS)
        expect(page.locator("#jobs-empty")).to_be_hidden()

        def card(job_id: str) -> Any:
            return page.locator(f'.job[data-job-id="{job_id}"]')

        for job_id, progress in ((running, "40"), (done, "70"), (broken, "20")):
            expect(card(job_id).locator(".job-status")).to_have_text("running")
            expect(card(job_id).get_by_role("progressbar")).to_have_attribute("aria-valuenow", progress)
        expect(card(done).locator(".job-step")).to_have_text(f"step: {LONG_STEP}")
        on_a_phone(page, "3-jobs-running")

        result = {"title": "Weekly report", "pages": 3, "sections": ["sales", "support"], "link": LONG_REASON}
        publish(done, status="completed", result=result)
        publish(broken, status="failed", failedReason=LONG_REASON)
        expect(card(done)).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
        expect(card(done).get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
        expect(card(done).locator(".kv div")).to_have_count(4)
        expect(card(broken)).to_have_attribute("data-status", "failed")
        expect(card(broken).locator(".job-error")).to_have_text(LONG_REASON)
        on_a_phone(page, "4-results")

        # After a reload the history comes from the hub's list: the ended jobs too, newest first.
        order = cards.evaluate_all("cards => cards.map((c) => c.dataset.jobId)")
        assert order == [broken, done, running]
        page.reload()
        expect(page.locator("#session-user")).to_have_text("ada")
        expect(cards).to_have_count(3, timeout=WAIT_MS)
        expect(page.locator("#connection")).to_have_attribute("data-state", "open", timeout=WAIT_MS)
        assert cards.evaluate_all("cards => cards.map((c) => c.dataset.jobId)") == order
        expect(card(running).get_by_role("progressbar")).to_have_attribute("aria-valuenow", "40")
        expect(card(done)).to_have_attribute("data-status", "completed")
        expect(card(done).locator(".kv div")).to_have_count(4)
        expect(card(broken).locator(".job-error")).to_have_text(LONG_REASON)
        expect(page.locator("#jobs-loading")).to_be_hidden()
        expect(page.locator("#jobs-empty")).to_be_hidden()
        on_a_phone(page, "5-reloaded")

        banner = page.locator("#hub-unreachable")
        expect(banner).to_be_hidden()
        proxy.cut(hold=True)
        cut_at = time.monotonic()
        expect(banner).to_be_visible(timeout=5000)
        shown = time.monotonic() - cut_at
        expect(card(running)).to_have_attribute("data-stale", "true")
        expect(card(running).locator(".job-status")).to_have_text("unknown")
        # An ended job's state cannot have moved on: it stays as it was.
        expect(card(done).locator(".job-status")).to_have_text("done")
        expect(card(broken).locator(".job-status")).to_have_text("failed")
        # Scrolled down to the card, the user still sees the banner.
        card(running).scroll_into_view_if_needed()
        page.wait_for_function(IN_VIEW, arg=card(running).element_handle(), timeout=3000)
        page.wait_for_function(IN_VIEW, arg=banner.element_handle(), timeout=3000)
        on_a_phone(page, "6-hub-unreachable", full_page=False)

        publish(running, status="active", progress=70, step="checking")
        proxy.release()
        released_at = time.monotonic()
        expect(banner).to_be_hidden(timeout=WAIT_MS)
        back = time.monotonic() - released_at
        expect(card(running)).not_to_have_attribute("data-stale", "true")
        expect(card(running).locator(".job-status")).to_have_text("running")
        expect(card(running).get_by_role("progressbar")).to_have_attribute("aria-valuenow", "70")
        expect(card(running).locator(".job-step")).to_have_text("step: checking")
        on_a_phone(page, "7-hub-back")
        print(f"\nbanner shown {shown:.2f} s after the cut, gone {back:.2f} s after the hub was reachable again")
        page.close()  # before the proxy goes: nothing left waiting on it
    assert not [problem for problem in problems if problem.startswith(("page error", "5"))], problems


# The page of an app on another origin: it imports the client from the hub,
# then follows a job in each of the two ways CLIENTS.md describes. `__HUB__`
# is the hub's URL.
APP_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>An app on another origin</title>
<script type="module">
  import { hubClient } from '__HUB__/static/hub-client.js';

  const HUB = '__HUB__';
  const post = async (path) => (await fetch(path, { method: 'POST' })).json();

  // 1. The app's backend signs a short-lived user token; the client does the rest.
  async function withToken() {
    const { token } = await post('/session');
    const hub = hubClient({ baseUrl: HUB, token });
    const { jobId, type } = await hub.createJob('character', { name: 'Cross' });
    const final = await new Promise((resolve, reject) =>
      hub.subscribeJob(type, jobId, { onComplete: resolve, onError: reject }));
    return { status: final.status, name: final.result.name };
  }

  // 2. The app's backend starts the job and buys the browser a ticket for its stream: no token in the page.
  async function withTicket() {
    const { sse, ticket } = await post('/jobs');
    return new Promise((resolve, reject) => {
      const source = new EventSource(`${HUB}${sse}?ticket=${encodeURIComponent(ticket)}`);
      source.onmessage = (message) => {
        const event = JSON.parse(message.data);
        if (event.status !== 'completed' && event.status !== 'failed') return;
        source.close();
        resolve({ status: event.status, name: event.result && event.result.name });
      };
      source.onerror = () => source.readyState === EventSource.CLOSED && reject(new Error('the stream was refused'));
    });
  }

  Promise.all([withToken(), withTicket()]).then(
    (outcome) => { window.outcome = outcome; },
    (error) => { window.outcome = { error: String(error) }; },
  );
</script>
"""


class AppOnAnotherOrigin(AppOrigin):
    """A web app on its own origin: its page, and a backend that holds the
    hub's key (it signs its users' tokens) and a service token (it starts
    jobs for its users and buys them stream tickets). Set `hub_url` once the
    hub runs."""

    def __init__(self, settings: Settings, user: str) -> None:
        self.hub_url = ""
        service = issue_service_token(settings, "report-worker")

        def backend(path: str) -> Answer:
            if path == "/session":
                return Answer.json({"token": issue_token(settings, user, ttl_seconds=300)})
            created = {"type": "character", "owner": user, "input": {"name": "Ticketed"}}
            sse = call(self.hub_url + "/api/v1/jobs", created, service)["links"]["sse"]
            ticket = call(self.hub_url + "/api/v1/sse/tickets", {"user": user, "path": sse}, service)["ticket"]
            return Answer.json({"sse": sse, "ticket": ticket})

        super().__init__(get=[lambda path: Answer.html(APP_PAGE.replace("__HUB__", self.hub_url))], post=[backend])


@pytest.mark.hub_settings(job_step_seconds=0.05)
def test_an_app_on_another_origin_imports_the_client_from_the_hub_and_follows_jobs(
    hub_process, worker, browser, settings
):
    """As CLIENTS.md says: HUB_CORS_ORIGINS names the app's origin; its page
    imports /static/hub-client.js from the hub, and follows a job with a
    token its backend signed, and another with a ticket its backend bought."""
    with AppOnAnotherOrigin(settings, "ada") as app:
        hub = hub_process(HUB_CORS_ORIGINS=app.origin)
        app.hub_url = hub.url
        worker()
        page = browser.new_page(viewport=DESKTOP)
        problems: list[str] = []
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(app.origin + "/")
        try:
            page.wait_for_function("() => window.outcome", timeout=WAIT_MS)
        except Exception as error:
            raise AssertionError(f"the app's page did not finish; the browser saw {problems}") from error
        outcome = page.evaluate("() => window.outcome")
    assert outcome == [{"status": "completed", "name": "Cross"}, {"status": "completed", "name": "Ticketed"}], (
        outcome,
        problems,
    )
    assert f"{hub.url}/static/hub-client.js" in requested
    assert not [url for url in requested if "access_token" in url]
