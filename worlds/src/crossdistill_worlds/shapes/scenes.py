"""Scenes and prompts of the shapes world, exactly as docs/shapes_world.md specifies them.

One filled shape (circle, square, triangle) of one of six colours at one of five
positions on a uniform gray background; rendered at 64x64 with 4x4 supersampling
for anti-aliasing; the 32x32 image is the 64x64 render 2x2 area-averaged.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from crossdistill.errors import CrossdistillError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 220),
    "yellow": (240, 210, 20), "purple": (140, 40, 180), "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS: dict[str, tuple[int, int]] = {   # bbox centre (x, y) at 64x64
    "center": (32, 32), "left": (16, 32), "right": (48, 32), "top": (32, 16), "bottom": (32, 48),
}
WHERE = {"center": "in the center", "left": "on the left", "right": "on the right",
         "top": "at the top", "bottom": "at the bottom"}
SIZE = 64
SUPERSAMPLE = 4
RADIUS = (8.0, 13.0)
JITTER = 3
GRAY = (180, 230)


@dataclass(frozen=True)
class Scene:
    color: str
    shape: str
    position: str
    radius: float = 10.0
    dx: int = 0
    dy: int = 0
    gray: int = 205

    @property
    def prompt(self) -> str:
        return make_prompt(self.color, self.shape, self.position)

    @property
    def center(self) -> tuple[int, int]:
        x, y = POSITIONS[self.position]
        return x + self.dx, y + self.dy


def make_prompt(color: str, shape: str, position: str) -> str:
    return f"a {color} {shape} {WHERE[position]}"


def all_prompts() -> list[str]:
    """The 90 prompts, in a fixed order (colour, shape, position)."""
    return [make_prompt(c, s, p) for c, s, p in itertools.product(COLORS, SHAPES, POSITIONS)]


def vocabulary() -> list[str]:
    words = {"a"} | set(COLORS) | set(SHAPES)
    for w in WHERE.values():
        words |= set(w.split())
    return sorted(words)


def parse_prompt(prompt: str) -> tuple[str, str, str]:
    """`a purple triangle on the left` -> ("purple", "triangle", "left"); a clear error otherwise."""
    words = prompt.strip().split()
    if len(words) < 3 or words[0] != "a":
        raise CrossdistillError(f"prompt {prompt!r} is outside the shapes grammar "
                                f"'a {{color}} {{shape}} {{where}}', e.g. 'a red circle on the left'")
    color, shape, where = words[1], words[2], " ".join(words[3:])
    if color not in COLORS:
        raise CrossdistillError(f"unknown color {color!r} in prompt {prompt!r}; allowed: {', '.join(COLORS)}")
    if shape not in SHAPES:
        raise CrossdistillError(f"unknown shape {shape!r} in prompt {prompt!r}; allowed: {', '.join(SHAPES)}")
    by_phrase = {v: k for k, v in WHERE.items()}
    if where not in by_phrase:
        raise CrossdistillError(f"unknown position {where!r} in prompt {prompt!r}; "
                                f"allowed: {', '.join(WHERE.values())}")
    return color, shape, by_phrase[where]


def object_words(prompt: str) -> list[list[int]]:
    """Word indices of the one object (colour, shape)."""
    parse_prompt(prompt)
    return [[1, 2]]


def random_scene(rng: np.random.Generator, prompt: str | None = None) -> Scene:
    """A scene drawn from the spec's distributions (for a given prompt, if any)."""
    if prompt is None:
        color = rng.choice(list(COLORS))
        shape = rng.choice(SHAPES)
        position = rng.choice(list(POSITIONS))
    else:
        color, shape, position = parse_prompt(prompt)
    return Scene(str(color), str(shape), str(position), radius=float(rng.uniform(*RADIUS)),
                 dx=int(rng.integers(-JITTER, JITTER + 1)), dy=int(rng.integers(-JITTER, JITTER + 1)),
                 gray=int(rng.integers(GRAY[0], GRAY[1] + 1)))


def coverage(scene: Scene, size: int = SIZE, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction of each pixel covered by the shape, (size, size) float in [0, 1]."""
    n = size * ss
    coords = (np.arange(n) + 0.5) / ss   # sub-pixel centres in pixel units
    x, y = np.meshgrid(coords, coords)
    cx, cy = scene.center
    r = scene.radius
    if scene.shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    elif scene.shape == "square":
        inside = (np.abs(x - cx) <= r) & (np.abs(y - cy) <= r)
    else:  # isosceles, apex up: base 2r on y = cy + r, apex at (cx, cy - r)
        frac = (y - (cy - r)) / (2 * r)           # 0 at apex, 1 at base
        inside = (frac >= 0) & (frac <= 1) & (np.abs(x - cx) <= frac * r)
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


def render(scene: Scene) -> np.ndarray:
    """The 64x64 RGB uint8 image of a scene."""
    cov = coverage(scene)[..., None]
    bg = np.full(3, scene.gray, dtype=np.float64)
    img = (1 - cov) * bg + cov * np.array(COLORS[scene.color], dtype=np.float64)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def downsample(img: np.ndarray) -> np.ndarray:
    """2x2 area average (64 -> 32), the only way the 32x32 images are made."""
    h, w, c = img.shape
    return np.rint(img.reshape(h // 2, 2, w // 2, 2, c).astype(np.float64).mean(axis=(1, 3))).astype(np.uint8)


def render_at(scene: Scene, size: int) -> np.ndarray:
    if size == SIZE:
        return render(scene)
    if size == SIZE // 2:
        return downsample(render(scene))
    raise CrossdistillError(f"unsupported shapes-world size {size}; allowed: 64, 32")
