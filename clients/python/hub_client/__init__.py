"""A Python client for the realtime hub. Standard library only.

Follow a job's progress over Server-Sent Events or long-poll, resuming by
cursor after any drop:

    from hub_client import HubClient

    client = HubClient("http://127.0.0.1:8088", user_token)
    job = client.create_job("transcode", {"url": "https://example.com/a.mov"})
    for event in client.watch(job["jobId"], "transcode"):
        print(event["status"], event.get("progress"))

Publish the progress of an external job from any worker, with a service
token (scope `hub:publish`):

    service = HubClient("http://127.0.0.1:8088", service_token)
    with service.run_job(job_id) as job:
        job.progress(50, step="halfway")
        job.result = {"ok": True}
"""

from hub_client.client import Event, HubClient
from hub_client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HubClientError,
    JobFinished,
    NotExternal,
    NotFound,
    OutcomeUnknown,
    ProtocolError,
    RetriesExhausted,
    Unauthorized,
)
from hub_client.running import RunningJob

__version__ = "0.2.0"

__all__ = [
    "BadRequest",
    "Conflict",
    "Event",
    "Forbidden",
    "HubClient",
    "HubClientError",
    "JobFinished",
    "NotExternal",
    "NotFound",
    "OutcomeUnknown",
    "ProtocolError",
    "RetriesExhausted",
    "RunningJob",
    "Unauthorized",
    "__version__",
]
