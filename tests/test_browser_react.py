"""The React hook in a real browser (Debian's chromium driven by Playwright):
a React 19 app on another origin renders one component per job with
`useJobSSE({ jobId, type, token, onComplete })`, in StrictMode as apps run in
development, for ten jobs of a type the app's own worker publishes (the test
plays that worker through the hub's service API). Each component reaches its
job's end, with the final status and progress, says so on the page, and
calls onComplete exactly once; rendering again opens nothing new. Two tabs of
the app follow them all over one stream."""

from __future__ import annotations

import json

from hub.web.auth import issue_token
from tests.support.app_origin import AppOrigin
from tests.support.app_worker import AppWorker
from tests.support.environment import need
from tests.support.processes import HubProcess
from tests.support.react_origin import have_react, react_app
from tests.support.tokens import issue_service_token
from tests.support.waiting import wait_for

JOBS = 10
USER = "ada"
#: A job type of the app's own workers (runner "external"): the test publishes its jobs' progress.
EXTERNAL = "report"
# Generous: a loaded CI machine is slow to start a browser and React's development build.
WAIT_MS = 30_000

# The app: one component per job, each with its own hook. What the test
# reads is on `window`: each hook's latest state, each job's onComplete calls,
# and the commits of the list (to know when a re-render has taken effect).
APP = """
import React, { StrictMode, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { useJobSSE } from '/client/react.js';

const { hubUrl, token, type, jobIds } = window.jobsToFollow;
window.hooks = {};
window.completions = {};
window.commits = 0;
const h = React.createElement;

function describe({ jobStatus, progress, error, job }) {
  if (error) return `error: ${error.message}`;
  if (jobStatus === 'completed') return `completed ${progress}%: ${job.result.title}`;
  if (jobStatus === 'failed') return `failed at ${progress}%: ${job.failedReason}`;
  return `${jobStatus || 'waiting'} ${progress}%`;
}

function Job({ jobId }) {
  const state = useJobSSE({
    jobId,
    type,
    token,
    baseUrl: hubUrl,
    // A new function at each render, as apps write it: the hook must not resubscribe for it.
    onComplete: (event) => (window.completions[jobId] ||= []).push(event.status),
  });
  const { jobStatus, progress, status, error } = state;
  window.hooks[jobId] = { jobStatus, progress, status, error: error && error.message };
  return h('li', { 'data-job-id': jobId, 'data-job-status': jobStatus || '' },
    h('progress', { value: progress, max: 100 }),
    h('span', { className: 'status' }, describe(state)));
}

function Jobs() {
  const [renders, setRenders] = useState(0);
  window.renderAgain = () => setRenders((n) => n + 1);
  // A parent's effects run after its children's: once this one has run, theirs have too.
  useEffect(() => { window.commits = renders + 1; });
  return h('ul', null, jobIds.map((jobId) => h(Job, { key: jobId, jobId })));
}

createRoot(document.getElementById('root')).render(h(StrictMode, null, h(Jobs)));
"""

ALL_ENDED = """(count) => {
    const states = Object.values(window.hooks || {});
    return states.length === count
        && states.every((s) => ['completed', 'failed'].includes(s.jobStatus) && s.status === 'closed');
}"""
SOME_LIVE = "() => Object.values(window.hooks || {}).some((s) => s.jobStatus === 'active' && s.progress === 30)"


def seen(problems: list[str]) -> list[str]:
    """What went wrong in the page, each thing once, a few at most."""
    return sorted(set(problems))[:5]


def open_sse_streams(hub: HubProcess) -> float:
    """The SSE streams open on the hub now, as its /metrics counts them."""
    return hub.metric("hub_connections", transport="sse")


def test_react_components_follow_ten_jobs_to_their_end_in_chromium(hub_process, browser, settings):
    from playwright.sync_api import expect

    need(have_react(), "run `npm ci --prefix clients/js` first (tests/js_deps.py does)")
    with AppOrigin(get=react_app(APP)) as app:
        hub = hub_process(HUB_CORS_ORIGINS=app.origin, HUB_EXTERNAL_JOB_TYPES=EXTERNAL)
        worker = AppWorker(hub.url, issue_service_token(settings, "report-worker"), EXTERNAL)
        jobs = [worker.start(USER) for _ in range(JOBS)]
        for job_id in jobs:
            worker.publish(job_id, status="active", progress=30, step="drafting")

        # Two tabs of the app, the same jobs in each: one stream for them all.
        context = browser.new_context()
        problems: list[str] = []
        requested: list[str] = []
        config = {"hubUrl": hub.url, "token": issue_token(settings, USER, 600), "type": EXTERNAL, "jobIds": jobs}
        context.add_init_script(f"window.jobsToFollow = {json.dumps(config)}")
        tabs = []
        for _ in range(2):
            tab = context.new_page()
            tab.on("console", lambda message: message.type == "error" and problems.append(message.text))
            tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            tab.on("request", lambda request: requested.append(request.url))
            tab.goto(app.origin + "/")
            try:
                tab.wait_for_function(SOME_LIVE, timeout=WAIT_MS)
            except Exception as error:
                raise AssertionError(f"no hook showed its job running; the browser saw {seen(problems)}") from error
            tabs.append(tab)
        page, other = tabs
        wait_for(lambda: open_sse_streams(hub) == 1)

        # The app's worker ends the jobs: half complete, half fail.
        expected: dict[str, tuple[str, int, str]] = {}
        for number, job_id in enumerate(jobs, 1):
            if number % 2:
                worker.publish(job_id, status="completed", result={"title": f"Report {number}"})
                expected[job_id] = ("completed", 100, f"completed 100%: Report {number}")
            else:
                worker.publish(job_id, status="failed", progress=60, failedReason=f"no data for region {number}")
                expected[job_id] = ("failed", 60, f"failed at 60%: no data for region {number}")
        for tab in tabs:
            try:
                tab.wait_for_function(ALL_ENDED, arg=JOBS, timeout=WAIT_MS)
            except Exception as error:
                hooks = tab.evaluate("() => window.hooks")
                raise AssertionError(f"not every hook reached its job's end: {hooks}; {seen(problems)}") from error

        hooks, completions = page.evaluate("() => [window.hooks, window.completions]")
        assert other.evaluate("() => [window.hooks, window.completions]") == [hooks, completions]
        for job_id, (status, progress, text) in expected.items():
            assert hooks[job_id] == {"jobStatus": status, "progress": progress, "status": "closed", "error": None}
            assert completions[job_id] == [status], f"onComplete of {job_id}: {completions.get(job_id)}"
            item = page.locator(f'li[data-job-id="{job_id}"]')
            expect(item.locator(".status")).to_have_text(text)
            expect(item.locator("progress")).to_have_attribute("value", str(progress))
        assert sorted(completions) == sorted(jobs)

        # Rendering again, with a new onComplete for every hook, subscribes to nothing.
        asked = len(requested)
        page.evaluate("() => window.renderAgain()")
        page.wait_for_function("() => window.commits === 2", timeout=WAIT_MS)
        assert [url for url in requested[asked:] if url.startswith(hub.url)] == []
        assert page.evaluate("() => [window.hooks, window.completions]") == [hooks, completions]
        assert seen(problems) == []
        context.close()
