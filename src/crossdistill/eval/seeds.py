"""Means and 95 % intervals over training seeds.

The interval is the Student-t one for the mean of n seeds, mean +- t(0.975, n-1) s / sqrt(n)
with s the sample standard deviation: it covers seed-to-seed variation of training
(generator noise, prompt order), not the finite number of evaluation images, which is
the same for every seed.
"""

from __future__ import annotations

import math


def mean_ci(values: list[float]) -> dict[str, float]:
    """{"mean", "ci95" (half-width), "n", "values"}; ci95 is nan for one value."""
    from scipy.stats import t

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "ci95": float("nan"), "n": n, "values": list(values)}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "ci95": float(t.ppf(0.975, n - 1) * sd / math.sqrt(n)), "n": n, "values": list(values)}


def _scalars(row: dict) -> dict[str, float]:
    out = {k: v for k, v in row["adherence"].items()}
    out["clean"] = row.get("fidelity", {}).get("clean", float("nan"))
    out["bg_level_sd"] = row.get("fidelity", {}).get("bg_level_sd", float("nan"))
    out["fid"] = row.get("fid", float("nan"))
    out.update({f"spread_{k}": v for k, v in row.get("variety", {}).items()})   # within-prompt spread per free factor
    if "prdc_in_prompt" in row:
        out["recall_in_prompt"] = row["prdc_in_prompt"]["recall"]
    if "diversity" in row:
        out["diversity"] = row["diversity"]
    out.update({k: v for k, v in row.get("diagnostics", {}).items()})
    return out


def seed_summary(per_seed: dict[str, list[dict]], pairs: list[tuple[str, str]] = ()) -> dict:
    """For every method, each metric's mean and interval over its seeds' evaluation rows;
    for each (a, b) in `pairs` with both present, the per-seed differences a - b (paired
    by seed) too, under "a - b"."""
    out = {}
    for label, rows in per_seed.items():
        vals = [_scalars(r) for r in rows]
        out[label] = {k: mean_ci([v[k] for v in vals]) for k in vals[0]}
    for pair in pairs:
        if all(len(per_seed.get(p, [])) > 1 for p in pair):
            a, b = ([_scalars(r) for r in per_seed[p]] for p in pair)
            keys = list(per_seed[pair[0]][0]["adherence"]) + ["clean", "fid"]   # every attribute, all, clean, FID
            out[f"{pair[0]} - {pair[1]}"] = {k: mean_ci([x[k] - y[k] for x, y in zip(a, b)]) for k in keys}
    return out


def bridge_seed_summary(rows: dict[str, dict], groups: dict[str, list[str]]) -> dict:
    """Held-out Bridge scores (`bridge.evaluate`, by run name) per variant: each scalar's
    mean and interval over the runs `groups[variant]` names (adherence: its `all`)."""
    out = {}
    for variant, names in groups.items():
        vals = [{**{k: v for k, v in rows[n].items() if isinstance(v, (int, float))},
                 **({"adherence": rows[n]["adherence"]["all"]} if "adherence" in rows[n] else {})} for n in names]
        out[variant] = {k: mean_ci([v[k] for v in vals]) for k in vals[0]}
    return out
