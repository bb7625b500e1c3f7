"""The README / docs results table from a demo folder's metrics.json (markdown).

    python benchmarks/demo_table.py runs/demo/metrics.json

With several training seeds the two main one-step rows show mean +- 95 % interval over
seeds (the other rows are single runs); `seeds` lists the cross - shared difference.
"""

from __future__ import annotations

import json
import sys

TEACHER = "Teacher (multi-step)"


def pm(stats, value, fmt):
    if stats and stats.get("n", 1) > 1:
        return f"{format(stats['mean'], fmt)} ± {format(stats['ci95'], fmt)}"
    return format(value, fmt)


def main() -> None:
    m = json.loads(open(sys.argv[1]).read())
    lat, seeds = m.get("latency", {}), m.get("seeds") or {}
    ref = lat.get(TEACHER, {}).get("ms_per_image_b1")
    print("| method | steps | colour | shape | position | all three | clean images | domain FID | z_std "
          "| ms/image (b=1) | speed-up (b=1 / b=8) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, r in m["generations"].items():
        a, st, lt = r["adherence"], seeds.get(label, {}), lat.get(label, {})
        clean = r.get("fidelity", {}).get("clean", float("nan"))
        z = r.get("diagnostics", {}).get("z_std")
        b1, b8 = lt.get("ms_per_image_b1"), lt.get("ms_per_image_b8")
        speed = (f"{ref / b1:.1f}x / {lat[TEACHER]['ms_per_image_b8'] / b8:.1f}x" if ref and b1 and b8 else "")
        print(f"| {label} | {lt.get('steps', '-')} | {pm(st.get('color'), a['color'], '.3f')} "
              f"| {pm(st.get('shape'), a['shape'], '.3f')} | {pm(st.get('position'), a['position'], '.3f')} "
              f"| {pm(st.get('all'), a['all'], '.3f')} | {pm(st.get('clean'), clean, '.3f')} "
              f"| {pm(st.get('fid'), r['fid'], '.0f')} | {pm(st.get('z_std'), z, '.2f') if z is not None else '-'} "
              f"| {'' if b1 is None else f'{b1:.1f}'} | {speed} |")
    for k, v in seeds.items():
        if " - " in k:
            print(f"\n{k} (paired by training seed, n = {v['all']['n']}): all three "
                  f"{v['all']['mean']:+.3f} ± {v['all']['ci95']:.3f}, clean {v['clean']['mean']:+.3f} ± "
                  f"{v['clean']['ci95']:.3f}, domain FID {v['fid']['mean']:+.0f} ± {v['fid']['ci95']:.0f} (95 % intervals)")


if __name__ == "__main__":
    main()
