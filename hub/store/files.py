"""Files that jobs make (a rendered image, a report), kept in Redis beside
the job for as long as the job, and served to the job's owner."""

from __future__ import annotations

import re

FILE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
#: One file at most; Redis holds it in memory.
MAX_FILE_BYTES = 8 * 1024 * 1024


def file_url(job_id: str, name: str) -> str:
    return f"/api/v1/jobs/{job_id}/files/{name}"
