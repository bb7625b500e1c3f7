"""Pixel measurements shared by the synthetic domains' judges: sub-pixel fill ratio of an
object and the image-fidelity statistics of the background around the objects."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SIZE = 64             # the grid the background is measured on

# A generated image is "clean" when its background (every pixel outside the judged
# objects, grown by MARGIN px on the 64 px grid) looks like a render's: flat, gray, at a
# render's level. Renders: std 0, tint 0, level in 180..230.
FLAT_STD = 5.0        # per-channel standard deviation of the background, 0-255 scale
MAX_TINT = 6.0        # largest difference between two channels' background means
LEVEL = (175.0, 235.0)   # background mean, the renders' gray range (180..230) +- 5
MARGIN = 3            # px of the 64 px grid around the objects left out (edges, halo)


def upsample64(img: np.ndarray) -> np.ndarray:
    """A 32 px image nearest-upsampled to the 64 px grid (its std is unchanged)."""
    img = np.asarray(img)
    if img.shape[0] == SIZE:
        return img
    f = SIZE // img.shape[0]
    return img.repeat(f, axis=0).repeat(f, axis=1)


def soft_fill(img: np.ndarray, obj: np.ndarray, bg: np.ndarray, color: np.ndarray) -> float:
    """Bbox fill ratio of an object with sub-pixel accuracy (needed at 32 px, where a
    radius is 3.5-6.5 px).

    alpha = coverage of each pixel, from its position on the bg -> colour line;
    area = sum(alpha); the bbox side along x is sum over columns of max alpha
    (an anti-aliased edge column counts as the fraction it is covered), same in y.
    """
    region = ndimage.binary_dilation(obj, structure=np.ones((3, 3)))
    d = color - bg
    alpha = np.clip(((img - bg) @ d) / (d @ d), 0.0, 1.0) * region
    ext_x, ext_y = alpha.max(axis=0).sum(), alpha.max(axis=1).sum()
    return float(alpha.sum() / max(ext_x * ext_y, 1e-6))


def background_stats(img: np.ndarray, objects: np.ndarray | None) -> dict[str, float]:
    """Statistics of the background of a uint8 (H, W, 3) image on the 64 px grid, given
    the objects' mask on that grid (None: no object found): the per-channel std (the
    largest of the three), tint (max - min of the channel means), mean level, and the
    fraction of the canvas it covers."""
    img = upsample64(img)
    if objects is not None:
        grown = ndimage.binary_dilation(objects, structure=np.ones((3, 3)), iterations=MARGIN)
        bg = img[~grown].astype(np.float64)
    else:
        bg = img.reshape(-1, 3).astype(np.float64)
    means = bg.mean(axis=0)
    return {"std": float(bg.std(axis=0).max()), "tint": float(means.max() - means.min()),
            "level": float(means.mean()), "area": len(bg) / (SIZE * SIZE)}


def is_clean(stats: dict[str, float]) -> bool:
    return (stats["std"] < FLAT_STD and stats["tint"] < MAX_TINT and LEVEL[0] <= stats["level"] <= LEVEL[1])


# The renders' background level is uniform in 180..230, so its spread over images is
# sqrt((51**2 - 1) / 12) = 14.7: a generator that paints every background the same gray
# has clean images and a small spread (a diversity loss the classifier's FID cannot see:
# its features ignore the background).
RENDER_LEVEL_SD = float(np.sqrt((51 ** 2 - 1) / 12))


def fidelity_of(stats: list[dict[str, float]]) -> dict[str, float]:
    """`clean` (fraction of clean images), the mean background statistics, and
    `bg_level_sd`, the standard deviation of the background level over the images
    (renders: RENDER_LEVEL_SD)."""
    if not stats:
        return {"clean": float("nan")}
    out = {"clean": float(np.mean([is_clean(s) for s in stats]))}
    out.update({f"bg_{k}": float(np.mean([s[k] for s in stats])) for k in ("std", "tint", "level")})
    out["bg_level_sd"] = float(np.std([s["level"] for s in stats]))
    return out


def within_prompt_spread(rows: list[dict[str, float]], prompts: list[str],
                         points: dict[str, tuple[str, str]] | None = None, per_prompt: bool = False) -> dict:
    """How much a model varies what a prompt leaves open: for each factor an image was
    read for (`rows`: one dict per image, NaN where it could not be read), the standard
    deviation over each prompt's images, averaged over the prompts that have at least two
    readings. `points`: pairs of coordinates spread as one position, the root of the sum
    of their variances (`{"position": ("x", "y")}`). A generator whose seed does nothing
    scores 0 on every factor. `per_prompt`: each factor's list of per-prompt spreads
    instead of their mean (for intervals over prompts)."""
    points = points or {}
    paired = {k for pair in points.values() for k in pair}
    by_prompt: dict[str, list[dict[str, float]]] = {}
    for row, p in zip(rows, prompts):
        by_prompt.setdefault(p, []).append(row)
    out: dict[str, list[float]] = {}
    for group in by_prompt.values():
        for key in group[0]:
            vals = np.array([r[key] for r in group], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if key not in paired and len(vals) >= 2:
                out.setdefault(key, []).append(float(vals.std(ddof=1)))
        for name, (a, b) in points.items():
            xy = np.array([[r[a], r[b]] for r in group], dtype=np.float64)
            xy = xy[np.isfinite(xy).all(1)]
            if len(xy) >= 2:
                out.setdefault(name, []).append(float(np.sqrt(xy.var(axis=0, ddof=1).sum())))
    return out if per_prompt else {k: float(np.mean(v)) for k, v in out.items()}
