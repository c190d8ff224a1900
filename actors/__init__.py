"""The Python API for an app's own job types, and the hub's actors.

    from actors import Integer, Text, job_type, report

    @job_type("transcode", input={"url": Text(required=True), "height": Integer(default=720)})
    def transcode(url: str, height: int) -> dict:
        report(40, step="download")
        ...
        return {"url": url}

Name the module in `HUB_APPS` and `hub up`, `hub serve` and `hub worker`
register the type: the hub validates its input and enqueues it, a worker
runs it, and every `report` reaches the job's followers. The lifecycle
(`active`, `retrying`, `completed` with the return value, `failed` once)
is reported for you. To fail a job on purpose, with a message its users
may read, raise `JobFailed("...")`; any other exception shows users its
class name only (the worker logs its text). See docs/JOBS.md.

Importing this package declares nothing on any broker; `actors.worker`
does that for the job types of the registry.
"""

from actors.progress import JobContext, current_job, report
from hub.errors import JobFailed
from hub.store.registry import JobType, external_job_type, job_type
from hub.store.schema import Boolean, Integer, Text

__all__ = [
    "Boolean",
    "Integer",
    "JobContext",
    "JobFailed",
    "JobType",
    "Text",
    "current_job",
    "external_job_type",
    "job_type",
    "report",
]
