"""Prompt adherence by image analysis (docs/shapes_world.md, "Metrics").

Each pixel is assigned to the nearest of the six palette colours or the background
gray (estimated from the image border); the dominant colour's largest connected
component is the object: its bbox centre gives the position, its bbox fill ratio
(measured with sub-pixel coverage) the shape (triangle ~0.5, circle ~0.785, square 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..pixels import background_stats, fidelity_of, is_clean, soft_fill, upsample64, within_prompt_spread

__all__ = ["adherence", "background", "factors", "failures", "fidelity", "is_clean", "read_image", "score",
           "variety"]
from .scenes import COLORS, POSITIONS, SHAPES, SIZE, parse_prompt

_PALETTE = np.array(list(COLORS.values()), dtype=np.float64)
_NAMES = list(COLORS)
_ANCHORS = np.array(list(POSITIONS.values()), dtype=np.float64)
# fill-ratio boundaries between the measured ranges on ground-truth renders (docs/shapes_world.md):
# triangle 0.53-0.66 (apex rows under-count at 32 px), circle 0.77-0.81, square 1.0
TRIANGLE_BELOW, CIRCLE_BELOW = 0.71, 0.90


@dataclass
class Reading:
    color: str | None
    shape: str | None
    position: str | None
    fill: float = 0.0


def _segment(img: np.ndarray):
    """(background colour, dominant palette index, its largest connected component) of a
    float image, or None when no pixel is nearest a palette colour."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    palette = np.vstack([_PALETTE, bg[None]])
    label = ((img[:, :, None, :] - palette[None, None]) ** 2).sum(-1).argmin(-1)
    counts = np.bincount(label.ravel(), minlength=len(palette))[: len(_NAMES)]
    if counts.max() == 0:
        return None
    ci = int(counts.argmax())
    comp, _ = ndimage.label(label == ci, structure=np.ones((3, 3)))
    sizes = np.bincount(comp.ravel())[1:]
    return bg, ci, comp == (int(sizes.argmax()) + 1)


def read_image(img: np.ndarray) -> Reading:
    """What a uint8 (H, W, 3) image shows."""
    img = img.astype(np.float64)
    w = img.shape[1]
    seg = _segment(img)
    if seg is None:
        return Reading(None, None, None)
    bg, ci, obj = seg
    ys, xs = np.nonzero(obj)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    fill = soft_fill(img, obj, bg, _PALETTE[ci])
    scale = SIZE / w
    centre = np.array([(x0 + x1) / 2 * scale, (y0 + y1) / 2 * scale])
    pos = list(POSITIONS)[int(((_ANCHORS - centre) ** 2).sum(-1).argmin())]
    shape = "triangle" if fill < TRIANGLE_BELOW else "circle" if fill < CIRCLE_BELOW else "square"
    return Reading(_NAMES[ci], shape, pos, float(fill))


def score(img: np.ndarray, prompt: str) -> dict[str, bool]:
    """Per-attribute correctness of one image for its prompt."""
    color, shape, pos = parse_prompt(prompt)
    r = read_image(img)
    ok = {"color": r.color == color, "shape": r.shape == shape, "position": r.position == pos}
    ok["all"] = all(ok.values())
    return ok


def adherence(images, prompts) -> dict[str, float]:
    """Mean accuracy of colour, shape, position and all three over image/prompt pairs."""
    rows = [score(np.asarray(im), p) for im, p in zip(images, prompts)]
    if not rows:
        return {k: float("nan") for k in ("color", "shape", "position", "all")}
    return {k: float(np.mean([r[k] for r in rows])) for k in ("color", "shape", "position", "all")}


def failures(images, prompts) -> dict[str, dict[str, int]]:
    """Per attribute, how many images got it wrong, by the value the prompt asked for
    (e.g. {"shape": {"triangle": 31, ...}}): which colours / shapes / positions fail."""
    out = {"color": dict.fromkeys(COLORS, 0), "shape": dict.fromkeys(SHAPES, 0),
           "position": dict.fromkeys(POSITIONS, 0)}
    for im, p in zip(images, prompts):
        ok, asked = score(np.asarray(im), p), dict(zip(("color", "shape", "position"), parse_prompt(p)))
        for k in out:
            out[k][asked[k]] += not ok[k]
    return out


def background(img: np.ndarray) -> dict[str, float]:
    """Background statistics of a uint8 image (outside the judged object, see pixels.py)."""
    img = np.asarray(img)
    seg = _segment(upsample64(img).astype(np.float64))
    return background_stats(img, None if seg is None else seg[2])


def fidelity(images) -> dict[str, float]:
    """Fraction of clean images (flat, untinted gray background at a render's level), and
    the means of the background statistics."""
    return fidelity_of([background(im) for im in images])


def factors(img: np.ndarray) -> dict[str, float]:
    """What a prompt leaves open, read from a uint8 image on the 64 px grid: the object's
    size (the square root of its area, px), its bbox centre (x, y) and the background
    level (NaN where no object is found)."""
    img64 = upsample64(np.asarray(img)).astype(np.float64)
    seg = _segment(img64)
    if seg is None:
        return {"size": np.nan, "x": np.nan, "y": np.nan, "background": np.nan}
    _, _, obj = seg
    ys, xs = np.nonzero(obj)
    return {"size": float(np.sqrt(obj.sum())), "x": (xs.min() + xs.max() + 1) / 2, "y": (ys.min() + ys.max() + 1) / 2,
            "background": background_stats(np.asarray(img), obj)["level"]}


def variety(images, prompts, per_prompt: bool = False) -> dict:
    """Within-prompt spread of size, position and background gray (pixels.within_prompt_spread)."""
    return within_prompt_spread([factors(im) for im in images], list(prompts), {"position": ("x", "y")}, per_prompt)
