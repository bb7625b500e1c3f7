"""Which clean-background rule each generated image breaks (docs/distill.md): flatness
(channel std >= 5), tint (>= 6) or level (outside 175-235), per generation folder.

    python benchmarks/background_rules.py runs/demo/generations/cross-space runs/demo/generations/shapes-teacher
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main(folders: list[str]) -> None:
    from crossdistill_worlds.pixels import FLAT_STD, LEVEL, MAX_TINT
    from crossdistill_worlds.shapes.judge import background

    print("| row | fails std | fails tint | fails level | median std | median tint | median level |")
    print("|---|---|---|---|---|---|---|")
    for folder in folders:
        stats = [background(np.array(Image.open(f).convert("RGB"))) for f in sorted(Path(folder).glob("*.png"))]
        std, tint, level = (np.array([s[k] for s in stats]) for k in ("std", "tint", "level"))
        fails = (std >= FLAT_STD).mean(), (tint >= MAX_TINT).mean(), ((level < LEVEL[0]) | (level > LEVEL[1])).mean()
        print(f"| {Path(folder).name} | " + " | ".join(f"{f:.2f}" for f in fails)
              + f" | {np.median(std):.1f} | {np.median(tint):.1f} | {np.median(level):.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
