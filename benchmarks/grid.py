"""A same-prompt, same-seed sample grid from generation folders (the report's grid code).

    python benchmarks/grid.py --out docs/measurements/pairs/grid.png --columns 12 \
        Teacher=runs/pairs-eval/teacher "Student base=runs/pairs-eval/student-base"
    python benchmarks/grid.py --out seeds.png --columns 12 --seeds 3 teacher=runs/vgrid/gen/teacher ...
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from crossdistill.report import seed_cells, write_grid_png

    ap = argparse.ArgumentParser()
    ap.add_argument("rows", nargs="+", help="LABEL=FOLDER (PNGs + manifest.jsonl), one grid row each")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--columns", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=0, help="N > 0: the first N prompts, columns // N seeds of each side "
                    "by side (the report's seeds grid), instead of one image per column")
    a = ap.parse_args()
    rows = {}
    for spec in a.rows:
        label, _, folder = spec.partition("=")
        if not folder:
            ap.error(f"{spec!r} is not LABEL=FOLDER")
        rows[label] = {"folder": folder}
    chosen = seed_cells(rows, prompts=a.seeds, per_prompt=a.columns // a.seeds) if a.seeds else None
    print(write_grid_png(rows, a.out, columns=a.columns, chosen=chosen))


if __name__ == "__main__":
    main()
