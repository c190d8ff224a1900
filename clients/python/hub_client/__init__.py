"""A Python client for the realtime hub: follow a job's progress over
Server-Sent Events or long-poll, resuming by cursor after any drop.

    from hub_client import HubClient

    client = HubClient("http://127.0.0.1:8088", token)
    for event in client.watch(job_id, "character"):
        print(event["status"], event.get("progress"))

Standard library only.
"""

from hub_client.client import Event, HubClient
from hub_client.errors import (
    BadRequest,
    HubClientError,
    NotFound,
    ProtocolError,
    RetriesExhausted,
    Unauthorized,
)

__all__ = [
    "BadRequest",
    "Event",
    "HubClient",
    "HubClientError",
    "NotFound",
    "ProtocolError",
    "RetriesExhausted",
    "Unauthorized",
]
