"""The variety remedies' grid (issue on variety): each row a stage-2 config plus overrides,
one training seed, trained, generated (the demo's 90 prompts x 4 images, seeds 100000 + k)
and scored: adherence, clean images and each free factor's within-prompt spread as a
ratio to the Teacher's (its generations at its own guidance, the demo's Teacher row).

    python benchmarks/variety_grid.py teacher                      # the reference, once
    python benchmarks/variety_grid.py run NAME SEED [KEY=VALUE ...] [--config distill_shapes]
    python benchmarks/variety_grid.py table [--table-out FILE]     # every row, by name, with 95 % intervals
    python benchmarks/variety_grid.py rescore                      # re-evaluate every row (a changed eval)

Rows are appended to OUT/rows.jsonl (default runs/vgrid); a row already there is skipped,
so a queue can be rerun. Each run uses one thread (two runs fit the 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from crossdistill.eval.seeds import mean_ci


PROMPTS = "configs/shapes_prompts.txt"
N, SEED = 4, 100_000
EXE = str(Path(sys.executable).with_name("crossdistill"))


def generate(model: str, out: Path, prompts: str, extra: list[str] = ()) -> dict:
    if not (out / "metrics.json").exists():
        subprocess.run([EXE, "eval", "--model", model, "--prompts-file", prompts, "--n-per-prompt", str(N),
                        "--seed", str(SEED), "--out", str(out), "--threads", "1", *extra], check=True)
    return json.loads((out / "metrics.json").read_text())


def run(args) -> None:
    root = args.out
    rows = root / "rows.jsonl"
    if rows.exists() and any(json.loads(l)["name"] == args.name and json.loads(l)["seed"] == args.seed
                             for l in rows.read_text().splitlines()):
        print(f"{args.name} seed {args.seed}: done")
        return
    slug = f"{args.name}-s{args.seed}"
    run_dir = root / "runs" / slug
    sets = [f"train.seed={args.seed}", "train.sample_every=0", *args.set]
    t0 = time.time()
    subprocess.run([EXE, "distill", args.config, "--out", str(run_dir), "--threads", "1", "--set", *sets],
                   check=True)
    train_s = time.time() - t0
    m = generate(str(run_dir / "student"), root / "gen" / slug, args.prompts)
    row = scores({"name": args.name, "seed": args.seed, "config": args.config, "set": args.set,
                  "train_s": round(train_s), "gen": str(root / "gen" / slug)}, m, root)
    with rows.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def scores(row: dict, m: dict, root: Path) -> dict:
    """A row's numbers from its generations' metrics.json, ratios to the Teacher's."""
    teacher = json.loads((root / "gen" / "teacher" / "metrics.json").read_text())
    row.update(all=m["adherence"]["all"], clean=m["fidelity"]["clean"], variety=m["variety"],
               ratio={k: v / teacher["variety"][k] if teacher["variety"][k] else float("nan")
                      for k, v in m["variety"].items()})
    if "prdc_in_prompt" in m and teacher["prdc_in_prompt"]["recall"]:
        row["ratio"]["recall"] = m["prdc_in_prompt"]["recall"] / teacher["prdc_in_prompt"]["recall"]
        row["recall"] = m["prdc_in_prompt"]["recall"]
    return row


def rescore(args) -> None:
    """Re-evaluate every row's generations (and the Teacher's) with this revision's eval."""
    from crossdistill.eval.harness import evaluate

    root = args.out
    evaluate(root / "gen" / "teacher")
    rows = [json.loads(l) for l in (root / "rows.jsonl").read_text().splitlines()]
    rows = [scores(r, evaluate(Path(r.get("gen") or root / "gen" / f"{r['name']}-s{r['seed']}")), root) for r in rows]
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def interval(v) -> tuple[float, float]:
    st = mean_ci(list(v))
    return st["mean"], st["ci95"]


def table(args) -> None:
    rows = [json.loads(l) for l in (args.rows or args.out / "rows.jsonl").read_text().splitlines()]
    names = list(dict.fromkeys(r["name"] for r in rows))
    factors = list(dict.fromkeys(f for r in rows for f in r["ratio"]))
    lines = ["mean over training seeds +- 95 % t-interval (seeds: n); spreads as ratios to the Teacher's",
             f"{'row':24}{'n':>3}{'all-three':>16}{'clean':>16}" + "".join(f"{f:>16}" for f in factors)
             + f"{'min spread':>12}"]
    summary = {}
    for name in names:
        rs = [r for r in rows if r["name"] == name]
        cells = {"all": interval([r["all"] for r in rs]), "clean": interval([r["clean"] for r in rs]),
                 **{f: interval([r["ratio"].get(f, float("nan")) for r in rs]) for f in factors}}
        low = min(cells[f][0] for f in factors if f != "recall")   # the spreads' lowest ratio
        summary[name] = {"seeds": [r["seed"] for r in rs], "set": rs[0]["set"], "config": rs[0]["config"],
                         **{k: {"mean": m, "ci95": h} for k, (m, h) in cells.items()}, "min_ratio": low}
        fmt = lambda c: f"{c[0]:.3f} +- {c[1]:.3f}" if c[1] == c[1] else f"{c[0]:.3f}"
        lines.append(f"{name:24}{len(rs):>3}" + "".join(f"{fmt(cells[k]):>16}" for k in ["all", "clean", *factors])
                     + f"{low:>12.2f}")
    print("\n".join(lines))
    if args.table_out:
        args.table_out.parent.mkdir(parents=True, exist_ok=True)
        args.table_out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
        args.table_out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["teacher", "run", "table", "rescore"])
    ap.add_argument("name", nargs="?")
    ap.add_argument("seed", nargs="?", type=int, default=0)
    ap.add_argument("set", nargs="*", help="KEY=VALUE overrides of the config")
    ap.add_argument("--config", default="distill_shapes")
    ap.add_argument("--prompts", default=PROMPTS)
    ap.add_argument("--teacher", default="shapes-teacher")
    ap.add_argument("--out", type=Path, default=Path("runs/vgrid"))
    ap.add_argument("--table-out", type=Path)
    ap.add_argument("--rows", type=Path, help="table: a rows file other than OUT/rows.jsonl (e.g. the committed "
                    "docs/measurements/variety/grid_rows.jsonl)")
    args = ap.parse_intermixed_args()   # KEY=VALUE overrides before or after --config
    if args.what == "teacher":
        print(generate(args.teacher, args.out / "gen" / "teacher", args.prompts)["variety"])
    elif args.what == "run":
        run(args)
    elif args.what == "rescore":
        rescore(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
