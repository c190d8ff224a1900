"""`generate_image`: renders a picture from a prompt with Pillow.

The prompt seeds the palette and the shapes, so the same prompt gives the
same picture. The PNG is stored in Redis (workers and hub processes may run
on different machines and share only Redis); its owner fetches it from the
hub at the URL in the job's result.
"""

from __future__ import annotations

import hashlib
import io
import random
import textwrap
from typing import Any

from PIL import Image, ImageDraw

from actors.progress import current_job
from hub.store.registry import SeedPaths, job_type
from hub.store.schema import Integer, Text

STRIPS = 4
SIDE_MIN = 64
SIDE_MAX = 1_024
SIDE_DEFAULT = 512


def _side(what: str) -> Integer:
    return Integer(minimum=SIDE_MIN, maximum=SIDE_MAX, default=SIDE_DEFAULT, description=f"{what} in pixels")


@job_type(
    "media",
    input={
        "prompt": Text(required=True, max_length=1_000, description="what to draw"),
        "width": _side("width"),
        "height": _side("height"),
    },
    actor_name="generate_image",
    seed_paths=SeedPaths(create="/api/v1/media/images", segment="media"),
    view={"title": "Image", "image": "url"},
    example={"prompt": "a fox at dawn", "width": 384, "height": 256},
)
def generate_image(prompt: str, width: int = SIDE_DEFAULT, height: int = SIDE_DEFAULT) -> dict[str, Any]:
    job = current_job()
    rng = random.Random(int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big"))
    top = tuple(rng.randint(0, 255) for _ in range(3))
    bottom = tuple(rng.randint(0, 255) for _ in range(3))
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)

    # The background in strips, reporting after each: 10% .. 70%.
    for strip in range(STRIPS):
        job.pause()
        for y in range(strip * height // STRIPS, (strip + 1) * height // STRIPS):
            mix = y / max(1, height - 1)
            color = tuple(int(a + (b - a) * mix) for a, b in zip(top, bottom, strict=True))
            draw.line([(0, y), (width, y)], fill=color)
        job.report(10 + 60 * (strip + 1) // STRIPS, step=f"background {strip + 1}/{STRIPS}")

    job.pause()
    for _ in range(rng.randint(5, 12)):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randint(min(width, height) // 20, min(width, height) // 5)
        fill = (*(rng.randint(0, 255) for _ in range(3)), 160)
        overlay = Image.new("RGBA", image.size)
        ImageDraw.Draw(overlay).ellipse([x - r, y - r, x + r, y + r], fill=fill)
        image = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    job.report(85, step="shapes")

    draw = ImageDraw.Draw(image)
    caption = "\n".join(textwrap.wrap(prompt, width=max(10, width // 8))[:4])
    draw.multiline_text((10, height - 14 * (caption.count("\n") + 1) - 10), caption, fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    png = buffer.getvalue()
    url = job.save_file("image.png", png, "image/png")
    job.report(95, step="stored")

    return {
        "url": url,
        "width": width,
        "height": height,
        "bytes": len(png),
        "contentType": "image/png",
    }
