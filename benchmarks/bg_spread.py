"""Image fidelity of generation folders, the background-level spread included
(`crossdistill_worlds/pixels.py`, `bg_level_sd`), without the rest of `eval` (no FID):

    python benchmarks/bg_spread.py runs/demo/generations/*

Prints one row per folder (read like `eval` reads it, its domain recognised from the
prompts): images, clean fraction, background std, tint, mean level and the level's
standard deviation over the images (renders: 14.7).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from crossdistill.eval.harness import infer_domain, read_generations

    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+", type=Path)
    a = ap.parse_args()
    print("| folder | images | clean | bg std | bg tint | bg level | bg level sd |")
    print("|---|---|---|---|---|---|---|")
    for folder in a.folders:
        gens = read_generations(folder)   # a folder without images is a clear error
        images = gens.images()
        f = infer_domain(gens.prompts).fidelity(images)
        print(f"| {folder} | {len(images)} | {f['clean']:.3f} | {f['bg_std']:.1f} | {f['bg_tint']:.1f} "
              f"| {f['bg_level']:.1f} | {f['bg_level_sd']:.1f} |")


if __name__ == "__main__":
    main()
