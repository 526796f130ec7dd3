"""Generated scenes for the demo model: a few coloured shapes on a 3x3 grid over a noisy background.

A scene is a list of objects, each with a shape, a colour, a size and a cell of
the 3x3 grid (at most one object per cell). `make_scene(seed)` draws one
deterministically from its seed; `render(scene)` paints it with PIL, also
deterministically (the background noise and the jitter come from the same seed).
The image is IMAGE_SIZE pixels square so that each grid cell is exactly 3x3
patches of the vision tower (image 72, patch 8).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLORS = {
    "red": (220, 40, 40),
    "yellow": (235, 210, 30),
    "green": (40, 170, 50),
    "cyan": (40, 205, 215),
    "blue": (40, 70, 230),
    "purple": (165, 55, 205),
}
SIZES = ("small", "large")
# Names of the 3x3 cells, row-major: (row, col) -> words used in questions and descriptions.
CELL_NAMES = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
GRID = 3
IMAGE_SIZE = 72
CELL = IMAGE_SIZE // GRID
MAX_OBJECTS = 6
# Half-extent in pixels of a shape of each size (a cell is 24 pixels wide).
RADIUS = {"small": 5.0, "large": 9.5}
JITTER = 2


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    row: int
    col: int

    @property
    def cell(self) -> str:
        return CELL_NAMES[self.row][self.col]


@dataclass(frozen=True)
class Scene:
    seed: int
    objects: tuple[SceneObject, ...]  # row-major order of their cells

    def at(self, row: int, col: int) -> SceneObject | None:
        return next((o for o in self.objects if (o.row, o.col) == (row, col)), None)


def make_scene(seed: int, min_objects: int = 1, max_objects: int = MAX_OBJECTS) -> Scene:
    """The scene of `seed`: min_objects..max_objects objects in distinct cells, attributes uniform."""
    if not 1 <= min_objects <= max_objects <= GRID * GRID:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= 9, got {min_objects}, {max_objects}")
    rng = random.Random(seed)
    count = rng.randint(min_objects, max_objects)
    cells = sorted(rng.sample(range(GRID * GRID), count))
    objects = tuple(
        SceneObject(rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SIZES), cell // GRID, cell % GRID)
        for cell in cells
    )
    return Scene(seed, objects)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "cross":
        w = r * 0.38
        return [
            (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
            (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
            (cx - r, cy - w), (cx - w, cy - w),
        ]
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def render(scene: Scene) -> Image.Image:
    """Paint `scene` as an RGB image of IMAGE_SIZE x IMAGE_SIZE pixels."""
    rng = np.random.default_rng(scene.seed)
    base = rng.uniform(70, 150, size=3)
    noise = rng.normal(0.0, 14.0, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    background = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        jx, jy = rng.integers(-JITTER, JITTER + 1, size=2)
        cx, cy = (obj.col + 0.5) * CELL + jx, (obj.row + 0.5) * CELL + jy
        r = RADIUS[obj.size]
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r), fill=fill)
    return image
