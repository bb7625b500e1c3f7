"""Markdown table of stage-2 A/B rows (the JSON lines `distill_curve.py` appends).

    python benchmarks/ab_table.py runs/ab/results.jsonl [NAME ...]
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    path, names = sys.argv[1], sys.argv[2:]
    rows = [json.loads(x) for x in open(path) if x.strip()]
    if names:
        rows = [r for n in names for r in rows if r["name"] == n]
    print("| row | settings (besides the config) | colour | shape | all three | clean | bg std | domain FID "
          "| z_std | re-encode err | clipped | Bridge drift |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, d, f = r["adherence"], r.get("diagnostics", {}), r.get("fidelity", {})
        sets = " ".join(o for o in r["overrides"] if not o.startswith(("bridge=", "bridge_dir=")))
        g = lambda k, fmt=".2f": format(d[k], fmt) if k in d else "-"   # noqa: E731
        print(f"| {r['name']} | `{sets}` | {a['color']:.3f} | {a['shape']:.3f} | {a['all']:.3f} | {r['clean']:.3f} "
              f"| {f.get('bg_std', float('nan')):.1f} | {r['fid']:.0f} | {g('z_std')} | {g('reencode_err')} "
              f"| {g('clipped', '.3f')} | {g('bridge_drift')} |")


if __name__ == "__main__":
    main()
