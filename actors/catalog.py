"""The job types the hub offers and the actors that run them.

Shared by the hub (which enqueues) and the workers (which declare the actors),
so neither has to import the other.
"""

from __future__ import annotations

#: The Dramatiq queue every job goes to.
QUEUE = "hub-jobs"

#: Job type (as in the API paths) -> actor name.
ACTORS = {
    "character": "create_character",
    "media": "generate_image",
}

#: Message option that tells the lifecycle middleware which job a message runs.
JOB_OPTION = "hub_job"
