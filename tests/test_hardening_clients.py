"""`hub watch` as a newcomer meets it: against a hub that is down it says at
once that it is retrying and gives up within its documented bound; a
result's text is printed as text (the terminal's control characters still
escaped); a file a job made is printed as an absolute URL, with how to fetch
it with the token. Real `hub serve` processes and real workers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request

import pytest
from hub_client import watch as watch_command

from hub.runtime.embedded import free_port
from hub.store.journal import Journal
from tests.support.watching import Lines, command_env, run_watch

RETRY_NOTICE = re.compile(
    r"\Ahub watch: hub unreachable at (?P<url>\S+) \([^)]*\); retrying in (?P<delay>\d+\.\d) s"
    r" \(attempt (?P<attempt>\d+) of (?P<attempts>\d+)\)\Z"
)


def test_hub_watch_against_a_hub_that_is_down_says_it_is_retrying_and_gives_up_in_bounded_time(token):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "hub", "watch", "--type", "character", "some-job", "--url", url],
        env=command_env(token("alice")),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = Lines(process.stderr)
        first = lines.next(timeout=1.0)  # raises queue.Empty if the command says nothing for a second
        first_after = time.monotonic() - started
        rest = lines.rest(timeout=watch_command.GIVE_UP_WITHIN + 10)
        code = process.wait(10)
        ended_after = time.monotonic() - started
    finally:
        process.kill()
        process.wait()
    print(f"\nfirst notice after {first_after:.2f} s, exit {code} after {ended_after:.1f} s: {[first, *rest]}")
    notices = [RETRY_NOTICE.match(line) for line in [first, *rest[:-1]]]
    assert all(notices), [first, *rest]
    attempts = watch_command.MAX_RETRIES + 1
    assert [(m["url"], int(m["attempt"]), int(m["attempts"])) for m in notices if m] == [
        (url, k, attempts) for k in range(2, attempts + 1)
    ]
    assert rest[-1].startswith("hub watch: cannot follow the job: gave up")
    assert code == 3
    # The delays announced are the delays waited, and they stay within the documented bound.
    announced = sum(float(m["delay"]) for m in notices if m)
    assert announced <= watch_command.GIVE_UP_WITHIN
    assert ended_after <= watch_command.GIVE_UP_WITHIN + 5
    assert process.stdout is not None and process.stdout.read() == ""


def test_hub_watch_prints_a_results_text_as_text_and_still_escapes_control_characters(
    hub_process, token, settings, sync_redis
):
    hub = hub_process()
    result = {
        "name": "Zoë “the brave”",
        "motto": "naïve café ✓ 東京",
        "trap": "red\x1b[31m alert\u202eevil",
    }
    journal = Journal(sync_redis, settings)
    journal.create("unicode", "alice", "character")
    journal.update("unicode", "alice", "character", status="active", progress=50, attempt=1, step="étape ✓")
    journal.update("unicode", "alice", "character", status="completed", progress=100, result=result)

    done = run_watch("--type", "character", "unicode", "--url", hub.url, token=token("alice"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "completed 100% étape ✓"  # the state now: the step it last reported
    last = lines[-1]
    assert "Zoë “the brave”" in last and "naïve café ✓ 東京" in last, last
    assert "\\u201c" not in last and "\\u00eb" not in last
    # What could drive the terminal stays escaped, and the line is still the result's JSON.
    assert "\x1b" not in done.stdout and "\u202e" not in done.stdout
    assert "\\u001b" in last and "\\u202e" in last
    assert json.loads(last) == result


@pytest.mark.hub_settings(job_step_seconds=0.02)
def test_hub_watch_prints_a_file_of_the_job_as_an_absolute_url_and_how_to_fetch_it(
    hub_process, worker, token, settings, sync_redis
):
    hub = hub_process()
    worker()
    alice = token("alice")
    request = urllib.request.Request(
        hub.url + "/api/v1/jobs",
        json.dumps({"type": "media", "input": {"prompt": "a lighthouse", "width": 64, "height": 64}}).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {alice}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        job_id = json.load(answer)["jobId"]

    done = run_watch("--type", "media", job_id, "--url", hub.url, token=alice)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.splitlines()[-1])
    url = printed["url"]
    assert url == f"{hub.url}/api/v1/jobs/{job_id}/files/image.png"
    # How to fetch it: the token in a header, by name, never its value.
    notes = done.stderr.splitlines()
    assert any("result.url" in note and "HUB_TOKEN" in note and url in note for note in notes), notes
    assert alice not in done.stdout + done.stderr
    # The URL as printed, with the token as said, is the image.
    fetch = urllib.request.Request(url, headers={"Authorization": f"Bearer {alice}"})
    with urllib.request.urlopen(fetch, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("image/png") and answer.read(8) == b"\x89PNG\r\n\x1a\n"

    # A seed path to a file (`/api/v1/{segment}/jobs/{id}/{name}`) is a file too; other paths are left alone.
    journal = Journal(sync_redis, settings)
    journal.create("seeded", "alice", "media")
    seeded = {"url": "/api/v1/media/jobs/seeded/image.png", "status": "/api/v1/jobs/seeded", "text": "/not/a/hub/path"}
    journal.update("seeded", "alice", "media", status="completed", progress=100, result=seeded)
    done = run_watch("--type", "media", "seeded", "--url", hub.url, token=alice)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {**seeded, "url": hub.url + seeded["url"]}
