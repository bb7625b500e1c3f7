"""Prompt adherence and image fidelity for shapes world II, by image analysis.

A pixel belongs to palette colour k when it lies on the line from the background gray
(median of the border) to k at least half way (alpha >= 0.5) and close to that line: so
the mixed pixels on an object's edge at 32 px count for the object's own colour, not for
a palette neighbour (a red-gray mix is nearer orange than red in plain RGB distance).
Every connected component of one colour of at least MIN_AREA px (64 px grid) is an
object. The prompt's first colour's largest object is object 1, its second colour's
object 2; each one's bbox fill ratio gives its shape; the relation is read along the
axis on which the centres differ most; any other object is a third object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..pixels import background_stats, fidelity_of, soft_fill, upsample64, within_prompt_spread
from ..shapes.scenes import COLORS, SHAPES
from .scenes import RELATIONS, SIZE, parse_prompt

_PALETTE = np.array(list(COLORS.values()), dtype=np.float64)
_NAMES = list(COLORS)
MIN_AREA = 24.0            # px on the 64 px grid; the smallest object (triangle, r = 7) covers ~100
MAX_OFF_LINE = 60.0        # RGB distance from the bg -> colour line still counted as that colour
# fill-ratio boundaries (PIL renders, no anti-aliasing): triangle ~0.5, circle ~0.8, square 1.0
TRIANGLE_BELOW, CIRCLE_BELOW = 0.68, 0.90
KEYS = ("colors", "shapes", "relation", "no_extra", "all")


@dataclass
class Found:
    color: str
    area: float            # px on the 64 px grid
    centre: tuple[float, float]   # (x, y) on the 64 px grid
    shape: str
    fill: float


def _labels(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(background colour, per-pixel palette index or -1 for background)."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    d = _PALETTE - bg                                    # (6, 3)
    v = img - bg                                         # (H, W, 3)
    alpha = np.clip((v @ d.T) / (d * d).sum(-1), 0, None)   # (H, W, 6)
    off = np.linalg.norm(v[:, :, None, :] - alpha[..., None] * d[None, None], axis=-1)
    best = off.argmin(-1)
    a = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
    o = np.take_along_axis(off, best[..., None], -1)[..., 0]
    return bg, np.where((a >= 0.5) & (o <= MAX_OFF_LINE), best, -1)


def find_objects(img: np.ndarray) -> tuple[list[Found], np.ndarray]:
    """Objects of a uint8 image (largest first) and the union of their masks on the
    image's own grid."""
    img = np.asarray(img).astype(np.float64)
    scale = SIZE / img.shape[1]
    bg, label = _labels(img)
    found, union = [], np.zeros(label.shape, bool)
    for ci in range(len(_NAMES)):
        comp, n = ndimage.label(label == ci, structure=np.ones((3, 3)))
        for j in range(1, n + 1):
            mask = comp == j
            area = mask.sum() * scale * scale
            if area < MIN_AREA:
                continue
            ys, xs = np.nonzero(mask)
            centre = ((xs.min() + xs.max() + 1) / 2 * scale, (ys.min() + ys.max() + 1) / 2 * scale)
            fill = soft_fill(img, mask, bg, _PALETTE[ci])
            shape = "triangle" if fill < TRIANGLE_BELOW else "circle" if fill < CIRCLE_BELOW else "square"
            found.append(Found(_NAMES[ci], float(area), centre, shape, fill))
            union |= mask
    found.sort(key=lambda f: -f.area)
    return found, union


def relation_of(a: tuple[float, float], b: tuple[float, float]) -> str:
    """Where centre a lies relative to centre b, along the axis where they differ most."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def _pick(found: list[Found], c1: str, c2: str) -> tuple[Found | None, Found | None]:
    """The largest object of each prompt colour (objects come largest first)."""
    return (next((f for f in found if f.color == c1), None), next((f for f in found if f.color == c2), None))


OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def relation_outcome(img: np.ndarray, prompt: str) -> tuple[str, Found | None, Found | None]:
    """How an image places the prompt's two objects: "right", "swapped" (on the named axis
    in the other order: the colours not bound to their sides), "other" (on the other axis)
    or "missing" (a prompt colour not found); and the two objects (None where not found)."""
    c1, _, want, c2, _ = parse_prompt(prompt)
    first, second = _pick(find_objects(img)[0], c1, c2)
    if first is None or second is None:
        return "missing", first, second
    rel = relation_of(first.centre, second.centre)
    return ("right" if rel == want else "swapped" if rel == OPPOSITE[want] else "other"), first, second


def score(img: np.ndarray, prompt: str) -> dict[str, bool]:
    c1, s1, rel, c2, s2 = parse_prompt(prompt)
    found, _ = find_objects(img)
    first, second = _pick(found, c1, c2)
    ok = {"colors": first is not None and second is not None}
    ok["shapes"] = ok["colors"] and first.shape == s1 and second.shape == s2
    ok["relation"] = ok["colors"] and relation_of(first.centre, second.centre) == rel
    ok["no_extra"] = len(found) <= 2
    ok["all"] = all(ok[k] for k in KEYS[:-1])
    return ok


def adherence(images, prompts) -> dict[str, float]:
    rows = [score(np.asarray(im), p) for im, p in zip(images, prompts)]
    if not rows:
        return {k: float("nan") for k in KEYS}
    return {k: float(np.mean([r[k] for r in rows])) for k in KEYS}


def failures(images, prompts) -> dict[str, dict[str, int]]:
    """Misses by what the prompt asked: a colour pair not found (by the first colour), a
    wrong shape (by the shape asked of that object), a wrong relation (by relation), a
    third object."""
    out = {"colors": dict.fromkeys(COLORS, 0), "shapes": dict.fromkeys(SHAPES, 0),
           "relation": dict.fromkeys(RELATIONS, 0), "no_extra": {"third object": 0}}
    for im, p in zip(images, prompts):
        c1, s1, rel, c2, s2 = parse_prompt(p)
        ok = score(np.asarray(im), p)
        out["colors"][c1] += not ok["colors"]
        if ok["colors"]:   # each object's shape, by the shape asked for it
            first, second = _pick(find_objects(np.asarray(im))[0], c1, c2)
            out["shapes"][s1] += first.shape != s1
            out["shapes"][s2] += second.shape != s2
        out["relation"][rel] += not ok["relation"]
        out["no_extra"]["third object"] += not ok["no_extra"]
    return out


def background(img: np.ndarray) -> dict[str, float]:
    """Background statistics outside every found object (see pixels.py)."""
    img = np.asarray(img)
    _, union = find_objects(upsample64(img))
    return background_stats(img, union if union.any() else None)


def fidelity(images) -> dict[str, float]:
    return fidelity_of([background(im) for im in images])


def factors(img: np.ndarray, prompt: str) -> dict[str, float]:
    """What a prompt leaves open, read from a uint8 image on the 64 px grid: each named
    object's size (the square root of its area, px), the gap between their centres, the
    pair's placement (the midpoint of the centres) and the background level (NaN where an
    object is not found)."""
    c1, _, _, c2, _ = parse_prompt(prompt)
    first, second = _pick(find_objects(img)[0], c1, c2)
    row = {"background": background(img)["level"]}
    if first is None or second is None:
        return {"size_1": np.nan, "size_2": np.nan, "gap": np.nan, "x": np.nan, "y": np.nan, **row}
    (x1, y1), (x2, y2) = first.centre, second.centre
    return {"size_1": float(np.sqrt(first.area)), "size_2": float(np.sqrt(second.area)),
            "gap": float(np.hypot(x2 - x1, y2 - y1)), "x": (x1 + x2) / 2, "y": (y1 + y2) / 2, **row}


def variety(images, prompts, per_prompt: bool = False) -> dict:
    """Within-prompt spread of both sizes, the gap, the placement and the background gray
    (pixels.within_prompt_spread)."""
    prompts = list(prompts)
    return within_prompt_spread([factors(im, p) for im, p in zip(images, prompts)], prompts,
                                {"placement": ("x", "y")}, per_prompt)
