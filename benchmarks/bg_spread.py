"""Image fidelity of generation folders, the background-level spread included
(`domains/pixels.py`, `bg_level_sd`), without the rest of `eval` (no FID):

    python benchmarks/bg_spread.py --domain shapes runs/demo/generations/*

Prints one row per folder: images, clean fraction, background std, tint, mean level and
the level's standard deviation over the images (renders: 14.7).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    from crossdistill.domains import get

    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--domain", default="shapes")
    a = ap.parse_args()
    dom = get(a.domain)
    print("| folder | images | clean | bg std | bg tint | bg level | bg level sd |")
    print("|---|---|---|---|---|---|---|")
    for folder in a.folders:
        images = [np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("*.png"))]
        if not images:
            print(f"| {folder} | 0 | - | - | - | - | - |")
            continue
        f = dom.fidelity(images)
        print(f"| {folder} | {len(images)} | {f['clean']:.3f} | {f['bg_std']:.1f} | {f['bg_tint']:.1f} "
              f"| {f['bg_level']:.1f} | {f['bg_level_sd']:.1f} |")


if __name__ == "__main__":
    main()
