"""The example job types, registered unless `HUB_EXAMPLE_JOBS=0`: they show
what an app's own job types look like (see docs/JOBS.md)."""

from actors.examples.characters import create_character
from actors.examples.images import generate_image

__all__ = ["create_character", "generate_image"]
