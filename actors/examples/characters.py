"""`create_character`: builds a character sheet from a name and a description.

Deterministic: the same inputs give the same character. Each step stands in
for a remote model call and reports progress when it is done.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from actors.progress import current_job
from hub.store.registry import SeedPaths, job_type
from hub.store.schema import Text

ARCHETYPES = ("wanderer", "scholar", "smuggler", "healer", "inventor", "guardian", "bard", "exile")
TRAITS = (
    "curious",
    "stubborn",
    "loyal",
    "witty",
    "patient",
    "reckless",
    "gentle",
    "proud",
    "secretive",
    "generous",
    "meticulous",
    "restless",
    "honest",
    "cunning",
    "brave",
    "wry",
)
ORIGINS = (
    "a harbour town",
    "the northern marshes",
    "a mountain monastery",
    "a travelling circus",
    "the capital's old quarter",
    "a lighthouse on the edge of the map",
    "a desert caravan",
)
GOALS = (
    "to find a lost sibling",
    "to repay an old debt",
    "to map the unmapped coast",
    "to prove a forgotten theory",
    "to protect a dangerous secret",
    "to build something that lasts",
)
TWISTS = (
    "but fears the sea",
    "but cannot read",
    "but owes money to the wrong people",
    "but has never told anyone their real name",
    "but keeps a diary in a cipher of their own",
)


@job_type(
    "character",
    input={
        "name": Text(required=True, max_length=100, description="who the character is"),
        "description": Text(max_length=2_000, description="a few words about them"),
    },
    actor_name="create_character",
    seed_paths=SeedPaths(create="/api/v1/characters", segment="characters"),
    view={"title": "Character", "summary": "backstory"},
    example={"name": "Ada", "description": "curious and brave"},
)
def create_character(name: str, description: str = "") -> dict[str, Any]:
    job = current_job()
    seed = int.from_bytes(hashlib.sha256(f"{name}\0{description}".encode()).digest()[:8], "big")
    rng = random.Random(seed)

    job.pause()
    archetype = rng.choice(ARCHETYPES)
    job.report(20, step="archetype")

    job.pause()
    words = {w.strip(".,;:!?").lower() for w in description.split()}
    chosen = [t for t in TRAITS if t in words][:2]
    chosen += rng.sample([t for t in TRAITS if t not in chosen], 3 - len(chosen))
    job.report(40, step="traits")

    job.pause()
    stats = {stat: rng.randint(6, 18) for stat in ("strength", "agility", "wits", "charm", "resolve")}
    job.report(60, step="attributes")

    job.pause()
    backstory = (
        f"{name} is a {chosen[0]} {archetype} from {rng.choice(ORIGINS)} "
        f"who wants {rng.choice(GOALS)}, {rng.choice(TWISTS)}."
    )
    if description:
        backstory += f" In their own words: \u201c{description}\u201d"
    job.report(80, step="backstory")

    job.pause()
    return {
        "name": name,
        "archetype": archetype,
        "traits": chosen,
        "stats": stats,
        "backstory": backstory,
        "seed": f"{seed:016x}",
    }
