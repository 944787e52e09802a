"""Synthetic pictures of coloured shapes, the world the demo model knows.

Deterministic from a seed. A picture shows one kind of shape in one colour (4 shapes x 4
colours = 16 classes), drawn a few times at random sizes, positions and tilts on a random grey
background with noise. Several copies per picture give a small vision transformer trained from
scratch enough corners and edges to learn shape in minutes rather than hours; a single big
shape (the bundled sample image) is recognised too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
}
CLASSES = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
SIZE = 224
# Start angle of the first corner that makes each polygon upright: flat-bottomed square, triangle
# and star pointing up. Tilts stay within +-MAX_TILT of upright.
UPRIGHT = {"square": math.pi / 4, "triangle": -math.pi / 2, "star": -math.pi / 2}
MAX_TILT = math.radians(25)


@dataclass(frozen=True)
class Instance:
    radius: float  # pixels, centre to outermost point
    centre: tuple[float, float]
    tilt: float  # radians from upright


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    colour: str
    instances: tuple[Instance, ...]
    background: tuple[int, int, int]
    noise: float  # std of per-pixel background noise
    jitter: tuple[int, int, int]  # added to the shape colour

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


def _polygon(shape: str, instance: Instance) -> list[tuple[float, float]]:
    cx, cy = instance.centre
    start = UPRIGHT[shape] + instance.tilt
    if shape == "star":  # 5 points: alternating outer and inner radius
        radii = [instance.radius if i % 2 == 0 else instance.radius * 0.45 for i in range(10)]
    else:
        radii = [instance.radius] * (4 if shape == "square" else 3)
    corners = len(radii)
    return [
        (cx + r * math.cos(start + 2 * math.pi * i / corners), cy + r * math.sin(start + 2 * math.pi * i / corners))
        for i, r in enumerate(radii)
    ]


def render(spec: ShapeSpec, rng: np.random.Generator | None = None) -> Image.Image:
    rng = rng or np.random.default_rng(0)
    noise = rng.normal(0, spec.noise, (SIZE, SIZE, 3))
    background = np.clip(np.asarray(spec.background, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[spec.colour], spec.jitter, strict=True))
    for instance in spec.instances:
        if spec.shape == "circle":
            cx, cy, r = *instance.centre, instance.radius
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            draw.polygon(_polygon(spec.shape, instance), fill=fill)
    return image.filter(ImageFilter.GaussianBlur(0.6))


def _instances(rng: np.random.Generator, count: int) -> tuple[Instance, ...]:
    """`count` shapes, sized so that they fit side by side, placed without heavy overlap."""
    placed: list[Instance] = []
    max_radius = 85 if count == 1 else 60 / math.sqrt(count) + 12
    for _ in range(count * 20):
        if len(placed) == count:
            break
        radius = float(rng.uniform(0.55, 1.0) * max_radius)
        centre = (float(rng.uniform(radius, SIZE - radius)), float(rng.uniform(radius, SIZE - radius)))
        if all(math.dist(centre, other.centre) > 0.8 * (radius + other.radius) for other in placed):
            placed.append(Instance(radius, centre, float(rng.uniform(-MAX_TILT, MAX_TILT))))
    return tuple(placed)


def sample(rng: np.random.Generator, label: str | None = None, count: int | None = None) -> ShapeSpec:
    """A random picture spec; `label` fixes the class, `count` the number of shapes (1 to 6)."""
    colour, shape = (label or CLASSES[rng.integers(len(CLASSES))]).split()
    light = bool(rng.integers(0, 2))
    grey = int(rng.integers(150, 245)) if light else int(rng.integers(20, 90))
    tint = rng.integers(-12, 13, 3)
    return ShapeSpec(
        shape=shape,
        colour=colour,
        instances=_instances(rng, int(count or rng.integers(1, 7))),
        background=tuple(int(np.clip(grey + t, 0, 255)) for t in tint),  # type: ignore[arg-type]
        noise=float(rng.uniform(0, 12)),
        jitter=tuple(int(x) for x in rng.integers(-25, 26, 3)),  # type: ignore[arg-type]
    )


def dataset(seed: int, per_class: int) -> list[tuple[Image.Image, str]]:
    """A balanced set: `per_class` pictures of every class, in a seed-determined order."""
    rng = np.random.default_rng(seed)
    items = [(render(sample(rng, label), rng), label) for label in CLASSES for _ in range(per_class)]
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def sample_picture(label: str = "red circle", seed: int = 7) -> Image.Image:
    """The bundled sample image: one big shape, like a newcomer would photograph it."""
    rng = np.random.default_rng(seed)
    return render(sample(rng, label, count=1), rng)


if __name__ == "__main__":
    import sys

    sample_picture().save(sys.argv[1] if len(sys.argv) > 1 else "red_circle.png")
