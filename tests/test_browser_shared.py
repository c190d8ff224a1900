"""One connection per browser, in real Chromium (Debian's, through
Playwright): the tabs of one user follow their jobs over one stream held by
one tab, which hands it over when it closes or is frozen, with no event lost
or doubled in any tab; and a page on HTTP/1.1 that follows 20 jobs at once is
not held up by the browser's six connections per origin."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from hub.web.auth import issue_token
from tests.support.tokens import issue_service_token
from tests.support.waiting import wait_for

#: A job type whose events the test publishes itself, as an app's worker would.
EXTERNAL = "report"
WAIT_MS = 30_000
STEPS = list(range(10, 100, 10))

# Follows `jobs` in this tab through the hub's own client, noting every event
# each subscription gets, its terminal calls, and the tab's part in sharing.
FOLLOW = """async ({ token, jobs }) => {
  const { subscribeJob } = await import('/static/hub-client.js');
  window.events = window.events || {};
  window.ended = window.ended || {};
  window.errors = window.errors || [];
  window.roles = window.roles || [];
  window.subscriptions = window.subscriptions || [];
  for (const { type, jobId } of jobs) {
    window.events[jobId] = [];
    window.subscriptions.push(subscribeJob(type, jobId, {
      token,
      onEvent: (event, id) => window.events[jobId].push(
        { type: event.type, status: event.status ?? null, progress: event.progress ?? null, id }),
      onComplete: () => { window.ended[jobId] = (window.ended[jobId] || 0) + 1; },
      onState: (state) => {
        const last = window.roles[window.roles.length - 1];
        if (state.shared && (!last || last.role !== state.shared || last.state !== state.state)) {
          window.roles.push({ role: state.shared, state: state.state, at: Date.now() });
        }
      },
      onError: (error) => window.errors.push(String(error)),
    }));
  }
}"""

CAUGHT_UP = "(ids) => ids.every((id) => window.events[id] && window.events[id].length > 0)"
ENDED = "(ids) => ids.every((id) => window.ended[id] === 1)"
ROLE = "() => { const r = window.roles[window.roles.length - 1]; return r ? r.role + ':' + r.state : null; }"


def call(url: str, body: dict[str, Any] | None, token: str) -> Any:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=10) as answer:
        return json.load(answer)


class Jobs:
    """External jobs of one user, and their worker's reports."""

    def __init__(self, hub: Any, settings: Any, owner: str, count: int) -> None:
        self.hub = hub
        self.service = issue_service_token(settings, "report-worker")
        self.ids = [
            call(hub.url + "/api/v1/jobs", {"type": EXTERNAL, "owner": owner}, self.service)["jobId"]
            for _ in range(count)
        ]

    def report(self, job_id: str, body: dict[str, Any]) -> None:
        call(f"{self.hub.url}/api/v1/jobs/{job_id}/events", body, self.service)

    def progress(self, job_ids: list[str], steps: list[int]) -> None:
        for step in steps:
            for job_id in job_ids:
                self.report(job_id, {"status": "active", "progress": step})

    def finish(self, job_ids: list[str]) -> None:
        for number, job_id in enumerate(job_ids):
            if number % 4 == 3:
                self.report(job_id, {"status": "failed", "failedReason": "out of paper"})
            else:
                self.report(job_id, {"status": "completed", "result": {"pages": number}})


def tabs_of(browser: Any, hub_url: str, count: int) -> tuple[Any, list[Any], list[str]]:
    """`count` tabs of one browser on the hub's origin, and what went wrong in them."""
    context = browser.new_context()
    # A blank page of the hub's origin: the client is imported from the hub.
    blank = "<!doctype html><title>tab</title>"
    context.route(hub_url + "/blank", lambda route: route.fulfill(body=blank, content_type="text/html"))
    problems: list[str] = []
    pages = []
    for _ in range(count):
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.goto(hub_url + "/blank")
        pages.append(page)
    return context, pages, problems


def follow(page: Any, token: str, job_ids: list[str]) -> None:
    page.evaluate(FOLLOW, {"token": token, "jobs": [{"type": EXTERNAL, "jobId": job_id} for job_id in job_ids]})


def check_every_event(page: Any, job_ids: list[str], failed: set[str]) -> None:
    """Each job's events, in this tab: its state, every step once and in
    order, and its end, once."""
    events, ended, errors = page.evaluate("() => [window.events, window.ended, window.errors]")
    assert errors == []
    for job_id in job_ids:
        seen = events[job_id]
        assert seen[0]["type"] == "initial_status", seen
        ids = [event["id"] for event in seen]
        assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-"))) and len(set(ids)) == len(ids)
        assert seen[0]["status"] == "queued", seen
        steps = [event["progress"] for event in seen[1:] if event["status"] == "active"]
        assert steps == STEPS, (job_id, seen)
        assert seen[-1]["status"] == ("failed" if job_id in failed else "completed"), seen
        assert ended[job_id] == 1


def failed_of(job_ids: list[str]) -> set[str]:
    return {job_id for number, job_id in enumerate(job_ids) if number % 4 == 3}


def test_three_tabs_follow_ten_jobs_each_over_one_connection(hub_process, browser, settings):
    hub = hub_process(HUB_EXTERNAL_JOB_TYPES=EXTERNAL)
    token = issue_token(settings, "ada", ttl_seconds=600)
    jobs = Jobs(hub, settings, "ada", 30)
    context, pages, problems = tabs_of(browser, hub.url, 3)
    try:
        groups = [jobs.ids[10 * n : 10 * n + 10] for n in range(3)]
        for page, group in zip(pages, groups, strict=True):
            follow(page, token, group)
        for page, group in zip(pages, groups, strict=True):
            page.wait_for_function(CAUGHT_UP, arg=group, timeout=WAIT_MS)
        roles = sorted(page.evaluate(ROLE) for page in pages)
        assert roles == ["follower:open", "follower:open", "leader:open"], (roles, problems)
        wait_for(lambda: hub.metric("hub_connections", transport="sse") == 1)

        jobs.progress(jobs.ids, STEPS)
        wait_for(lambda: hub.metric("hub_connections", transport="sse") == 1)
        jobs.finish(jobs.ids)
        for page, group in zip(pages, groups, strict=True):
            page.wait_for_function(ENDED, arg=group, timeout=WAIT_MS)
            check_every_event(page, group, failed_of(jobs.ids) & set(group))
        # Closed once no tab follows a job (on the way, as a tab's last job
        # ended, another tab took the stream over).
        wait_for(lambda: hub.metric("hub_connections", transport="sse") == 0)
        assert problems == []
    finally:
        context.close()


def leader_of(pages: list[Any]) -> Any:
    leaders = [page for page in pages if page.evaluate(ROLE) == "leader:open"]
    assert len(leaders) == 1, [page.evaluate(ROLE) for page in pages]
    return leaders[0]


def took_over(pages: list[Any], since_ms: float) -> float:
    """Seconds from `since_ms` (epoch ms) until one of `pages` led an open stream."""

    def moment() -> float | None:
        for page in pages:
            for entry in page.evaluate("() => window.roles"):
                if entry["role"] == "leader" and entry["state"] == "open" and entry["at"] >= since_ms:
                    return float(entry["at"])
        return None

    return (wait_for(moment, timeout=WAIT_MS / 1000) - since_ms) / 1000


@pytest.mark.parametrize("how", ["closed", "frozen"])
def test_when_the_leading_tab_goes_another_takes_over_with_nothing_lost(hub_process, browser, settings, how):
    hub = hub_process(HUB_EXTERNAL_JOB_TYPES=EXTERNAL)
    token = issue_token(settings, "ada", ttl_seconds=600)
    jobs = Jobs(hub, settings, "ada", 6)
    context, pages, problems = tabs_of(browser, hub.url, 3)
    try:
        for page in pages:
            follow(page, token, jobs.ids)
        for page in pages:
            page.wait_for_function(CAUGHT_UP, arg=jobs.ids, timeout=WAIT_MS)
        wait_for(lambda: all(page.evaluate(ROLE) in ("leader:open", "follower:open") for page in pages))
        jobs.progress(jobs.ids, STEPS[:3])

        leader = leader_of(pages)
        others = [page for page in pages if page is not leader]
        gone_at = time.time() * 1000
        if how == "closed":
            leader.close()
        else:
            # Its page stops running, as a frozen or hung tab's does.
            session = context.new_cdp_session(leader)
            session.send("Debugger.enable")
            session.send("Debugger.pause")
        # Reported while no tab leads: they come with the new leader's resume.
        jobs.progress(jobs.ids, STEPS[3:6])
        takeover = took_over(others, gone_at)
        jobs.progress(jobs.ids, STEPS[6:])
        jobs.finish(jobs.ids)
        if how == "frozen":
            session.send("Debugger.resume")
            # Running again, it gives the lead up and catches up as a follower.
            others.append(leader)
        for page in others:
            page.wait_for_function(ENDED, arg=jobs.ids, timeout=WAIT_MS)
        for page in others:
            check_every_event(page, jobs.ids, failed_of(jobs.ids))
        print(f"\nleader {how}: another tab led an open stream {takeover:.2f} s later")
        assert problems == []
    finally:
        context.close()


def test_a_page_following_twenty_jobs_is_not_held_up_by_the_browsers_connection_limit(hub_process, browser, settings):
    """HTTP/1.1 allows six connections per origin: twenty streams would hold
    the fourteen others, and every other request of the page, forever."""
    hub = hub_process(HUB_EXTERNAL_JOB_TYPES=EXTERNAL)
    token = issue_token(settings, "ada", ttl_seconds=600)
    jobs = Jobs(hub, settings, "ada", 20)
    context, (page,), problems = tabs_of(browser, hub.url, 1)
    try:
        follow(page, token, jobs.ids)
        page.wait_for_function(CAUGHT_UP, arg=jobs.ids, timeout=WAIT_MS)
        # The page can still talk to the hub while it follows them all.
        types = page.evaluate(
            """async (token) => (await (await fetch('/api/v1/job-types',
                 { headers: { Authorization: `Bearer ${token}` } })).json()).data.map((t) => t.type)""",
            token,
        )
        assert EXTERNAL in types
        jobs.progress(jobs.ids, STEPS)
        jobs.finish(jobs.ids)
        page.wait_for_function(ENDED, arg=jobs.ids, timeout=WAIT_MS)
        check_every_event(page, jobs.ids, failed_of(jobs.ids))
        assert hub.metric("hub_connections_opened_total", transport="sse") == 1
        assert problems == []
    finally:
        context.close()
