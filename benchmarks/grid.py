"""A same-prompt, same-seed sample grid from generation folders (the report's grid code).

    python benchmarks/grid.py --out docs/measurements/pairs/grid.png --columns 12 \
        Teacher=runs/pairs-eval/teacher "Student base=runs/pairs-eval/student-base"
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from crossdistill.report import write_grid_png

    ap = argparse.ArgumentParser()
    ap.add_argument("rows", nargs="+", help="LABEL=FOLDER (PNGs + manifest.jsonl), one grid row each")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--columns", type=int, default=8)
    a = ap.parse_args()
    rows = {}
    for spec in a.rows:
        label, _, folder = spec.partition("=")
        if not folder:
            ap.error(f"{spec!r} is not LABEL=FOLDER")
        rows[label] = {"folder": folder}
    print(write_grid_png(rows, a.out, columns=a.columns))


if __name__ == "__main__":
    main()
