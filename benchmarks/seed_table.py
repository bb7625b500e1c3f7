"""Mean and 95 % interval over training seeds of `distill_curve.py` rows (markdown).

    python benchmarks/seed_table.py runs/long18/results.jsonl --steps 1200 \
        "cross-space long=cross-long-s0,cross-long-s1,cross-long-s2"

Each GROUP is LABEL=NAME,NAME,... (one run per seed, scored at `--steps`). Prints, per
group, every adherence attribute, clean images, the background-level spread (recomputed
from the run's generation folder, ROOT/NAME/gen-STEPS, for rows written before it
existed), domain FID and z_std as mean ± 95 % interval (Student-t, `eval/seeds.py`),
then the per-attribute failure counts summed over the seeds. `--diff "A-B"` (group labels)
adds the paired differences A - B (the groups' runs paired in the order given: same seed).

    python benchmarks/seed_table.py runs/two15/results.jsonl --steps 300 \
        "two=both-s0,both-s1,both-s2" "sd3=sd3-s0,sd3-s1,sd3-s2" --diff "two-sd3"
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path


def spread(row: dict, root: Path) -> float:
    """The row's bg_level_sd, or recomputed from ROOT/NAME/gen-STEPS (read like `eval`
    reads it); nan (with a warning) when neither is there."""
    if "bg_level_sd" in row.get("fidelity", {}):
        return row["fidelity"]["bg_level_sd"]
    from crossdistill.eval.harness import infer_domain, read_generations

    folder = root / row["name"] / f"gen-{row['steps']}"
    if not (folder / "manifest.jsonl").is_file():
        print(f"warning: {row['name']} at {row['steps']} steps has no bg_level_sd and {folder} holds no generations",
              file=sys.stderr)
        return float("nan")
    gens = read_generations(folder)
    return infer_domain(gens.prompts).fidelity(gens.images())["bg_level_sd"]


def main() -> None:
    from crossdistill.eval.seeds import mean_ci

    ap = argparse.ArgumentParser()
    ap.add_argument("log", type=Path)
    ap.add_argument("groups", nargs="+", help="LABEL=NAME,NAME,...")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--root", type=Path, help="distill_curve.py's --root (default: the log's folder)")
    ap.add_argument("--diff", action="append", default=[], help="A-B: paired differences of two groups")
    a = ap.parse_args()
    rows = [json.loads(x) for x in a.log.read_text().splitlines() if x.strip()]
    table, failures, per_seed = [], {}, {}
    for spec in a.groups:
        label, _, names = spec.partition("=")
        # the last row of a name and step count (a re-scored run appends a newer one)
        got = [next((r for r in reversed(rows) if r["name"] == n and r["steps"] == a.steps), None)
               for n in names.split(",")]
        if None in got:
            ap.error(f"{label}: no row at {a.steps} steps for "
                     f"{[n for n, r in zip(names.split(','), got) if r is None]}")
        vals = {k: [r["adherence"][k] for r in got] for k in got[0]["adherence"]}
        vals["clean"] = [r["clean"] for r in got]
        vals["bg level sd"] = [spread(r, a.root or a.log.parent) for r in got]
        vals["domain FID"] = [r["fid"] for r in got]
        vals["z_std"] = [r["diagnostics"].get("z_std", float("nan")) for r in got]
        table.append((label, len(got), {k: mean_ci(v) for k, v in vals.items()}))
        per_seed[label] = vals
        failures[label] = {attr: sum((Counter(r["failures"][attr]) for r in got), Counter())
                           for attr in got[0]["failures"]}
    keys = list(table[0][2])
    print(f"| Student ({a.steps} steps) | seeds | " + " | ".join(k.replace("_", " ") for k in keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for label, n, st in table:
        cells = []
        for k in keys:
            fmt = ".1f" if k in ("bg level sd", "domain FID") else ".3f" if k != "z_std" else ".2f"
            m, ci = st[k]["mean"], st[k]["ci95"]
            cells.append(f"{m:{fmt}} ± {ci:{fmt}}" if n > 1 else f"{m:{fmt}}")
        print(f"| {label} | {n} | " + " | ".join(cells) + " |")
    for spec in a.diff:
        # labels may hold "-" themselves ("cross-space"): the split at the "-" that leaves two labels
        splits = [(spec[:i], spec[i + 1:]) for i, ch in enumerate(spec) if ch == "-"]
        x, y = next(((u, v) for u, v in splits if u in per_seed and v in per_seed), ("", ""))
        if x not in per_seed or y not in per_seed or len(per_seed[x]["all"]) != len(per_seed[y]["all"]):
            ap.error(f"--diff {spec!r}: two group labels with as many runs each, from {sorted(per_seed)}")
        cells = []
        for k in keys:
            st = mean_ci([u - v for u, v in zip(per_seed[x][k], per_seed[y][k])])
            fmt = ".1f" if k in ("bg level sd", "domain FID") else ".3f" if k != "z_std" else ".2f"
            cells.append(f"{st['mean']:+{fmt}} ± {st['ci95']:{fmt}}")
        print(f"| {x} - {y} (paired by seed) | {len(per_seed[x]['all'])} | " + " | ".join(cells) + " |")
    print("\nFailures summed over the seeds (images in which the attribute was wrong, by the value asked for):\n")
    for label, f in failures.items():
        print(f"- {label}: " + "; ".join(f"{attr}: " + ", ".join(f"{v} {c}" for v, c in cnt.most_common())
                                         for attr, cnt in f.items() if cnt) )


if __name__ == "__main__":
    main()
