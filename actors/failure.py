"""`JobFailed`: how an actor fails its job on purpose, with a message meant
for the job's users.

Any other exception fails the attempt too, but users see only its class
name: its text may hold what they must not read (SQL, file paths, hosts,
secrets). The worker logs that text, with the job's id."""

from __future__ import annotations

#: Longest `failedReason` users are shown.
MESSAGE_MAX = 500


class JobFailed(Exception):
    """Fails the running job at once, without a retry, and shows `message`
    to its users as the job's `failedReason` (and `result.error`).

        raise JobFailed("the monthly quota is used up")
    """

    def __init__(self, message: str) -> None:
        text = str(message).strip()
        super().__init__(text)
        self.message = text[:MESSAGE_MAX] or "the job failed"
