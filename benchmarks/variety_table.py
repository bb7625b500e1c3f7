"""Within-prompt variety of each model's generations, and its ratio to the Teacher's.

    python benchmarks/variety_table.py runs/demo/generations [--teacher shapes-teacher] [--out FILE.json]

Every folder under GENERATIONS that holds generations (PNGs + manifest.jsonl, as
`crossdistill generate` and the demo write them) is read with its domain's judge
(`Domain.variety`: the spread of each factor the prompt leaves open over the prompt's
images). Each cell: the mean over prompts with a 95 % t-interval over prompts; the ratio
to the Teacher's mean beside it (the issue on variety's targets are ratios).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


from crossdistill.eval.harness import infer_domain, read_generations
from crossdistill.eval.seeds import mean_ci


def summary(values: list[float]) -> dict[str, float]:
    st = mean_ci(values)
    return {"mean": st["mean"], "ci95": st["ci95"], "prompts": st["n"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("generations", type=Path, help="a folder of generation folders (e.g. runs/demo/generations)")
    ap.add_argument("--teacher", help="the folder name of the reference (default: the one with 'teacher' in it)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    folders = sorted(p.parent for p in args.generations.glob("*/manifest.jsonl"))
    rows = {}
    for folder in folders:
        gens = read_generations(folder)
        dom = infer_domain(gens.prompts)
        spread = dom.variety(gens.images(), gens.prompts, per_prompt=True)
        rows[folder.name] = {k: summary(v) for k, v in spread.items()}
    ref = args.teacher or next((n for n in rows if "teacher" in n), None)
    factors = list(next(iter(rows.values())))
    print(f"within-prompt spread, mean over prompts +- 95 % interval (ratio to {ref}):")
    print(f"{'model':28}" + "".join(f"{f:>24}" for f in factors))
    for name, row in rows.items():
        cells = []
        for f in factors:
            r = row[f]
            ratio = r["mean"] / rows[ref][f]["mean"] if ref else float("nan")
            r["ratio_to_teacher"] = ratio
            cells.append(f"{r['mean']:7.2f} +- {r['ci95']:4.2f} ({ratio:4.2f})")
        print(f"{name:28}" + "".join(f"{c:>24}" for c in cells))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"reference": ref, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
