"""World II: a learning-curve table of `distill_curve.py` rows with the relation read
among the images in which both prompt colours are found (`judge.relation_outcome`).

    python benchmarks/pairs_binding_table.py runs/ab17/results.jsonl \
        "control=control-exact-s0,control-exact-s1" "cross-space=pairs-cross-s0" --steps 300 1200 3600

Each GROUP is LABEL=NAME,NAME,... (one run per seed); a row per group and step count that
has runs, each seed's value shown (seed order, " / "). The relation is recomputed from the
run's generation folder, ROOT/NAME/gen-STEPS, and shown with the number of images it is
read on ("0.782 of 294").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from pairs_relation import relation_stats   # benchmarks/, this script's folder

    ap = argparse.ArgumentParser()
    ap.add_argument("log", type=Path)
    ap.add_argument("groups", nargs="+", help="LABEL=NAME,NAME,...")
    ap.add_argument("--steps", type=int, nargs="+", required=True)
    ap.add_argument("--root", type=Path, help="distill_curve.py's --root (default: the log's folder)")
    a = ap.parse_args()
    root = a.root or a.log.parent
    rows = [json.loads(line) for line in a.log.read_text().splitlines() if line.strip()]
    print("| Student | steps | seeds | colors | shapes | relation (both colours found) | all | clean | domain FID |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in a.groups:
        label, _, names = spec.partition("=")
        if not names:
            ap.error(f"{spec!r} is not LABEL=NAME,NAME,...")
        names = names.split(",")
        for step in a.steps:
            got = sorted((r for r in rows if r["name"] in names and r["steps"] == step),
                         key=lambda r: names.index(r["name"]))
            if not got:
                continue

            def cell(values, fmt="{:.3f}"):
                return " / ".join(fmt.format(v) for v in values)

            rel = " / ".join("{right:.3f} of {found}".format(**relation_stats(root / r["name"] / f"gen-{step}"))
                             for r in got)
            print(f"| {label} | {step} | {len(got)} | {cell(r['adherence']['colors'] for r in got)} | "
                  f"{cell(r['adherence']['shapes'] for r in got)} | {rel} | "
                  f"{cell(r['adherence']['all'] for r in got)} | {cell(r['clean'] for r in got)} | "
                  f"{cell((r['fid'] for r in got), '{:.2f}')} |")


if __name__ == "__main__":
    main()
