"""What a published update looks like, and how a lost answer is settled.

`POST /api/v1/jobs/{id}/events` is not idempotent, and a connection can
break after the hub applied an update but before its answer arrived. The
client then sends the update again, with this outcome:

- a progress update (`active`) may be applied twice: the job's state is the
  same either way, and a follower sees the same values once more;
- a terminal update (`completed`, `failed`) cannot be applied twice: the
  second try answers 409 `job_finished`. The client then reads the job: if it
  ended with the very status and result (or reason) that were sent, the
  update is taken as the one that went through and `publish` returns None
  (the id of its event was in the lost answer). Otherwise someone else ended
  the job (another worker, or the hub failing it as stalled) and JobFinished
  is raised, as it is whenever the first try already answers 409.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PUBLISH_STATUSES = ("active", "completed", "failed")
TERMINAL_STATUSES = frozenset({"completed", "failed"})
#: The longest `step` and `failedReason` the hub keeps.
MAX_STEP_CHARS = 200
MAX_REASON_CHARS = 500


def event_body(
    status: str,
    progress: float | None = None,
    step: str | None = None,
    result: Mapping[str, Any] | None = None,
    failed_reason: str | None = None,
) -> dict[str, Any]:
    """The JSON body of one update; raises ValueError for one the hub would
    refuse, so that a mistake shows where it was made."""
    if status not in PUBLISH_STATUSES:
        raise ValueError(f"status must be one of {', '.join(PUBLISH_STATUSES)}")
    body: dict[str, Any] = {"status": status}
    if progress is not None:
        if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0 <= progress <= 100:
            raise ValueError("progress must be a number from 0 to 100")
        # Rounded down: 99.6 % done is not done.
        body["progress"] = int(progress)
    if step is not None:
        body["step"] = str(step)
    if result is not None:
        if status != "completed":
            raise ValueError("only a completed update carries a result")
        body["result"] = check_result(result)
    if failed_reason is not None:
        if status != "failed":
            raise ValueError("only a failed update carries a reason")
        body["failedReason"] = str(failed_reason)
    return body


def check_result(result: Any) -> dict[str, Any]:
    """A job's result is a JSON object."""
    if not isinstance(result, Mapping):
        raise TypeError(f"a job's result must be a mapping (a JSON object), not {type(result).__name__}")
    return dict(result)


def was_ours(job: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether the job ended exactly as this terminal update would end it."""
    if job.get("status") != body["status"]:
        return False
    if body["status"] == "failed":
        return "failedReason" not in body or job.get("failedReason") == body["failedReason"]
    sent = _as_json(body.get("result"))
    stored = job.get("result")
    return stored == sent or (sent is None and stored in (None, {}))


def exception_reason(error: BaseException) -> str:
    """`ClassName: message`, as short as the hub keeps it."""
    name = type(error).__name__
    text = str(error).strip()
    return (f"{name}: {text}" if text else name)[:MAX_REASON_CHARS]


def _as_json(value: Any) -> Any:
    # What the hub stored is what JSON made of it: tuples became lists, and so on.
    return json.loads(json.dumps(value)) if value is not None else None
