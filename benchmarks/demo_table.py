"""The README / docs results tables from a demo folder's metrics.json (markdown).

    python benchmarks/demo_table.py runs/demo/metrics.json

Columns are the domain's adherence attributes (world I: colour, shape, position; world II:
colours, shapes, relation, no extra), then all-correct, clean images, the spread of the background level over images
(renders: 14.7; a diversity measure), domain FID, z_std,
latency; then each free factor's within-prompt spread and in-prompt recall with their
ratios to the Teacher's (`docs/variety.md`). With several training seeds a row shows mean ± 95 % interval over its seeds;
then the paired differences (a - b per seed), and the held-out Bridge table (with its
stage-1 seeds' intervals when the demo retrained Bridges per seed).
"""

from __future__ import annotations

import json
import sys

from crossdistill.report import variety_rows

TEACHER = "Teacher (multi-step)"
BRIDGE_KEYS = ("latent_mse", "roundtrip_drift", "attn_error", "object_attn_error", "psnr")


def pm(stats, value, fmt):
    if stats and stats.get("n", 1) > 1:
        return f"{format(stats['mean'], fmt)} ± {format(stats['ci95'], fmt)}"
    return format(value, fmt)


def fmt_pm(v: tuple[float, float], fmt: str) -> str:
    """(mean, 95 % half-width or nan) as text."""
    return format(v[0], fmt) if v[1] != v[1] else f"{format(v[0], fmt)} ± {format(v[1], fmt)}"


def signed(stats, fmt):
    return f"{format(stats['mean'], '+' + fmt)} ± {format(stats['ci95'], fmt)}"


def main() -> None:
    m = json.loads(open(sys.argv[1]).read())
    lat, seeds = m.get("latency", {}), m.get("seeds") or {}
    ref = lat.get(TEACHER, {}).get("ms_per_image_b1")
    attrs = [k for k in next(iter(m["generations"].values()))["adherence"] if k != "all"] + ["all"]
    print("| method | steps | " + " | ".join(a.replace("_", " ") for a in attrs)
          + " | clean images | bg level sd | domain FID | z_std | ms/image (b=1) | speed-up (b=1 / b=8) |")
    print("|---|---|" + "---|" * len(attrs) + "---|---|---|---|---|---|")
    for label, r in m["generations"].items():
        a, st, lt = r["adherence"], seeds.get(label, {}), lat.get(label, {})
        clean = r.get("fidelity", {}).get("clean", float("nan"))
        spread = r.get("fidelity", {}).get("bg_level_sd")
        z = r.get("diagnostics", {}).get("z_std")
        b1, b8 = lt.get("ms_per_image_b1"), lt.get("ms_per_image_b8")
        speed = (f"{ref / b1:.1f}x / {lat[TEACHER]['ms_per_image_b8'] / b8:.1f}x" if ref and b1 and b8 else "")
        fid_fmt = ".0f" if r["fid"] > 100 else ".2f"
        print(f"| {label} | {lt.get('steps', '-')} | "
              + " | ".join(pm(st.get(k), a[k], ".3f") for k in attrs)
              + f" | {pm(st.get('clean'), clean, '.3f')} "
              f"| {pm(st.get('bg_level_sd'), spread, '.1f') if spread is not None else '-'} "
              f"| {pm(st.get('fid'), r['fid'], fid_fmt)} "
              f"| {pm(st.get('z_std'), z, '.2f') if z is not None else '-'} "
              f"| {'' if b1 is None else f'{b1:.1f}'} | {speed} |")
    diffs = {k: v for k, v in seeds.items() if " - " in k}
    if diffs:   # paired by training seed: per seed a - b, then mean ± 95 % interval
        keys = list(next(iter(diffs.values())))   # the domain's attributes, all, clean, fid
        print("\n| a - b (paired by training seed) | " + " | ".join(k.replace("_", " ") for k in keys) + " | seeds |")
        print("|---|" + "---|" * (len(keys) + 1))
        for k, v in diffs.items():
            print(f"| {k} | " + " | ".join(signed(v[c], ".2f" if c == "fid" else ".3f") if c in v else "-"
                                         for c in keys) + f" | {v['all']['n']} |")
    variety = variety_rows(m)   # the report's variety table: spreads as ratios to the Teacher's
    if variety:
        factors = list(m["generations"][TEACHER]["variety"])
        print("\n| method | " + " | ".join(f"{f} spread (ratio)" for f in factors)
              + " | in-prompt recall (ratio) |")
        print("|---|" + "---|" * (len(factors) + 1))
        for label, row in variety.items():
            cell = lambda v, r, fmt: f"{fmt_pm(v, fmt)} ({fmt_pm(r, '.2f')})"   # noqa: E731
            print(f"| {label} | " + " | ".join(cell(row[f], row[f"{f} ratio"], ".2f") for f in factors)
                  + f" | {cell(row['recall'], row.get('recall ratio', (float('nan'), float('nan'))), '.3f') if 'recall' in row else '-'} |")
    bridge, bseeds = m.get("bridge") or {}, m.get("bridge_seeds") or {}
    if bridge:
        keys = [k for k in BRIDGE_KEYS if k in next(iter(bridge.values()))]
        print("\n| Bridge | " + " | ".join(keys) + " | adherence (all) |")
        print("|---|" + "---|" * (len(keys) + 1))
        rows = bseeds or bridge
        for name, r in rows.items():
            if bseeds:
                cells = [pm(r[k], r[k]["mean"], ".4g") for k in keys] + [pm(r["adherence"], r["adherence"]["mean"], ".3f")]
            else:
                cells = [format(r[k], ".4g") for k in keys] + [format(r["adherence"]["all"], ".3f")]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
