"""Files that jobs make (a rendered image, a report), kept in Redis beside
the job for as long as the job, and served to the job's owner."""

from __future__ import annotations

import re

#: A file's name: what a job may save, and what the file routes take.
FILE_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
FILE_NAME = re.compile(rf"\A{FILE_NAME_PATTERN}\Z")
#: One file at most; Redis holds it in memory.
MAX_FILE_BYTES = 8 * 1024 * 1024


def file_url(job_id: str, name: str) -> str:
    return f"/api/v1/jobs/{job_id}/files/{name}"
