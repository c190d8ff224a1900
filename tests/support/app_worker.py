"""An app's own worker, played by a test: with a service token it creates
jobs of an external type for a user and publishes their progress through the
hub's service API (POST /api/v1/jobs, POST /api/v1/jobs/{id}/events), as the
worker of docs/CLIENTS.md does."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

REQUEST_TIMEOUT_SECONDS = 5


class AppWorker:
    def __init__(self, hub_url: str, service_token: str, job_type: str) -> None:
        self.hub_url = hub_url
        self.token = service_token
        self.job_type = job_type

    def start(self, owner: str) -> str:
        """A new job of the worker's type for `owner`; its id."""
        return str(self._post("/api/v1/jobs", {"type": self.job_type, "owner": owner})["jobId"])

    def publish(self, job_id: str, **update: Any) -> None:
        """One update: status, and progress, step, result or failedReason."""
        self._post(f"/api/v1/jobs/{job_id}/events", update)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        request = urllib.request.Request(self.hub_url + path, json.dumps(body).encode(), headers)
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as answer:
            return json.load(answer)
