"""Scenes and prompts of shapes world II ("pairs"), as docs/shapes_world.md specifies them.

Two filled shapes of two different palette colours, placed by a spatial relation on a
flat gray background; drawn with PIL ImageDraw at 64 x 64 without anti-aliasing; the
32 px image is the 64 px render averaged over 2 x 2 blocks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from crossdistill.errors import CrossdistillError
from ..shapes.scenes import COLORS, SHAPES, downsample

RELATIONS = ("left of", "right of", "above", "below")
SIZE = 64
RADIUS = (7.0, 10.0)
GRAY = (180, 230)
# object centres per relation: ((x1, y1), (x2, y2)) and the jitter bound of each coordinate
_LAYOUT = {
    "left of": (((18, 2), (32, 8)), ((46, 2), (32, 8))),
    "right of": (((46, 2), (32, 8)), ((18, 2), (32, 8))),
    "above": (((32, 8), (18, 2)), ((32, 8), (46, 2))),
    "below": (((32, 8), (46, 2)), ((32, 8), (18, 2))),
}


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str
    cx: int
    cy: int
    radius: float


@dataclass(frozen=True)
class Scene:
    first: Obj
    second: Obj
    relation: str
    gray: int = 205

    @property
    def prompt(self) -> str:
        return make_prompt(self.first.color, self.first.shape, self.relation,
                           self.second.color, self.second.shape)


def make_prompt(c1: str, s1: str, rel: str, c2: str, s2: str) -> str:
    return f"a {c1} {s1} {rel} a {c2} {s2}"


def all_prompts() -> list[str]:
    """The 1080 prompts in the spec's order: c1, s1, relation, c2 (skipping c1), s2."""
    return [make_prompt(c1, s1, rel, c2, s2)
            for c1, s1, rel in itertools.product(COLORS, SHAPES, RELATIONS)
            for c2 in COLORS if c2 != c1 for s2 in SHAPES]


def eval_prompts() -> list[str]:
    """The 120 evaluation prompts: enumeration indices 9k + (k mod 9), k = 0..119."""
    every = all_prompts()
    return [every[9 * k + k % 9] for k in range(120)]


def vocabulary() -> list[str]:
    words = {"a"} | set(COLORS) | set(SHAPES)
    for r in RELATIONS:
        words |= set(r.split())
    return sorted(words)


def parse_prompt(prompt: str) -> tuple[str, str, str, str, str]:
    """`a red circle left of a blue square` -> ("red", "circle", "left of", "blue", "square");
    a clear error naming the bad word otherwise."""
    words = prompt.strip().split()
    grammar = "'a {color} {shape} {left of|right of|above|below} a {color} {shape}'"
    if len(words) not in (7, 8) or words[0] != "a":
        raise CrossdistillError(f"prompt {prompt!r} is outside the pairs grammar {grammar}, "
                                f"e.g. 'a red circle left of a blue square'")
    c1, s1 = words[1], words[2]
    rel = " ".join(words[3:5]) if len(words) == 8 else words[3]
    rest = words[5:] if len(words) == 8 else words[4:]
    if rel not in RELATIONS:
        raise CrossdistillError(f"unknown relation {rel!r} in prompt {prompt!r}; allowed: {', '.join(RELATIONS)}")
    if rest[0] != "a":
        raise CrossdistillError(f"prompt {prompt!r} is outside the pairs grammar {grammar}")
    c2, s2 = rest[1], rest[2]
    for c in (c1, c2):
        if c not in COLORS:
            raise CrossdistillError(f"unknown color {c!r} in prompt {prompt!r}; allowed: {', '.join(COLORS)}")
    for s in (s1, s2):
        if s not in SHAPES:
            raise CrossdistillError(f"unknown shape {s!r} in prompt {prompt!r}; allowed: {', '.join(SHAPES)}")
    if c1 == c2:
        raise CrossdistillError(f"prompt {prompt!r} names {c1!r} twice; the two objects' colours must differ")
    return c1, s1, rel, c2, s2


def object_words(prompt: str) -> list[list[int]]:
    """Word indices of each object (colour, shape): [[1, 2], [last two]]."""
    parse_prompt(prompt)
    n = len(prompt.split())
    return [[1, 2], [n - 2, n - 1]]


def random_scene(rng: np.random.Generator, prompt: str | None = None) -> Scene:
    """A scene drawn from the spec's distributions (for a given prompt, if any)."""
    if prompt is None:
        prompts = all_prompts()
        prompt = prompts[int(rng.integers(len(prompts)))]
    c1, s1, rel, c2, s2 = parse_prompt(prompt)
    gray = int(rng.integers(GRAY[0], GRAY[1] + 1))
    objs = []
    for (x, jx), (y, jy) in _LAYOUT[rel]:
        objs.append((x + int(rng.integers(-jx, jx + 1)), y + int(rng.integers(-jy, jy + 1)),
                     float(rng.uniform(*RADIUS))))
    (x1, y1, r1), (x2, y2, r2) = objs
    return Scene(Obj(c1, s1, x1, y1, r1), Obj(c2, s2, x2, y2, r2), rel, gray)


def _draw(draw, obj: Obj) -> None:
    cx, cy, r = obj.cx, obj.cy, obj.radius
    fill = COLORS[obj.color]
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif obj.shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx - r, cy + r), (cx + r, cy + r), (cx, cy - r)], fill=fill)


def render(scene: Scene) -> np.ndarray:
    """The 64 x 64 RGB uint8 image of a scene (PIL ImageDraw, no anti-aliasing)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (SIZE, SIZE), (scene.gray,) * 3)
    draw = ImageDraw.Draw(img)
    _draw(draw, scene.first)
    _draw(draw, scene.second)
    return np.asarray(img, dtype=np.uint8).copy()


def render_at(scene: Scene, size: int) -> np.ndarray:
    if size == SIZE:
        return render(scene)
    if size == SIZE // 2:
        return downsample(render(scene))
    raise CrossdistillError(f"unsupported pairs-world size {size}; allowed: 64, 32")
