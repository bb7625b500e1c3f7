"""report.html: one self-contained page (images inlined as data URIs, plots as inline SVG)
from a demo folder's metrics: the results table (with 95 % intervals over training seeds
when there are several), image fidelity, per-attribute failures, stage-2 latent
diagnostics, sample grids with the same prompts and seeds for every method, loss curves,
Bridge metrics, how to load each exported Student, the config and the provenance
(commit, hardware, versions, wall time per stage)."""

from __future__ import annotations

import base64
import html
import io
import json
import platform
from pathlib import Path

from .domains import example_prompt

# the demo's row labels (demo.py builds the rows, this page reads them)
REAL, TEACHER, BASE = "real renders", "Teacher (multi-step)", "Student base (multi-step)"
SHARED, CROSS = "shared-space one-step", "cross-space one-step"
REFERENCE = TEACHER
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("crossdistill", "torch", "diffusers", "transformers", "peft", "accelerate", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def provenance() -> dict:
    """What made these numbers: git commit (and whether the tree had changes), CPU / GPU,
    core count, package versions."""
    import os
    import subprocess

    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  cwd=Path(__file__).parent).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                   if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:   # provenance never fails a report
        gpu = "unknown"
    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain")),
            "cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "versions": _versions()}


def _png_uri(path: Path, scale: int = 2) -> str:
    from PIL import Image

    img = Image.open(path).convert("RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _manifest(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (Path(folder) / "manifest.jsonl").read_text().splitlines() if x.strip()]


def grid_cells(rows: dict[str, dict], columns: int = 8):
    """(picks, {label: [image path or None per pick]}): the same (prompt, seed) in every row;
    real renders (scenes, not seeded samples) show the first render of the prompt."""
    manifests = {label: _manifest(r["folder"]) for label, r in rows.items() if Path(r["folder"], "manifest.jsonl").exists()}
    gen_rows = {k: v for k, v in manifests.items() if k != "real renders"}
    if not gen_rows:
        return [], {}
    first = next(iter(gen_rows.values()))
    step = max(1, len(first) // columns)
    picks = [(e["prompt"], e["seed"]) for e in first[::step][:columns]]
    return picks, _cells(rows, manifests, picks)


def _cells(rows: dict[str, dict], manifests: dict[str, list[dict]], picks: list[tuple]) -> dict[str, list]:
    """Each row's image for each (prompt, seed) of `picks` (None: it has none); real renders
    (scenes, not seeded samples) show the first render of the prompt."""
    cells = {}
    for label, entries in manifests.items():
        by_key = {(e["prompt"], e["seed"]): e for e in entries}
        by_prompt = {}
        for e in entries:
            by_prompt.setdefault(e["prompt"], e)
        found = [by_key.get(k) or (by_prompt.get(k[0]) if label == REAL else None) for k in picks]
        cells[label] = [Path(rows[label]["folder"]) / e["file"] if e else None for e in found]
    return cells


def _grid_table(picks: list[tuple], cells: dict[str, list]) -> str:
    """One row per method, one column per (prompt, seed): the same pair in every row."""
    head = "".join(f"<th class='p'>{html.escape(p)}<br><span class='s'>seed {s}</span></th>" for p, s in picks)
    body = []
    for label, paths in cells.items():
        tds = "".join(f"<td><img src='{_png_uri(f)}' alt='{html.escape(p)}'></td>" if f else "<td>-</td>"
                      for f, (p, _) in zip(paths, picks))
        body.append(f"<tr><th class='m'>{html.escape(label)}</th>{tds}</tr>")
    return f"<table class='grid'><tr><th></th>{head}</tr>{''.join(body)}</table>"


def _grid(rows: dict[str, dict], columns: int = 8) -> str:
    picks, cells = grid_cells(rows, columns)
    return _grid_table(picks, cells) if picks else "<p>no generations</p>"


def write_grid_png(rows: dict[str, dict], path: Path, columns: int = 8, cell: int = 96, chosen=None) -> Path:
    """The report's sample grid as one PNG (rows: methods, labelled; columns: prompt + seed);
    `chosen`: (picks, cells) other than `grid_cells`' (e.g. `seed_cells`)."""
    from PIL import Image, ImageDraw

    picks, cells = chosen or grid_cells(rows, columns)
    label_w = 190
    img = Image.new("RGB", (label_w + cell * len(picks), cell * len(cells)), "white")
    draw = ImageDraw.Draw(img)
    for r, (label, paths) in enumerate(cells.items()):
        draw.text((6, r * cell + cell // 2 - 6), label, fill="black")
        for c, f in enumerate(paths):
            if f:
                img.paste(Image.open(f).convert("RGB").resize((cell - 4, cell - 4), Image.NEAREST),
                          (label_w + c * cell + 2, r * cell + 2))
    tmp = Path(path).with_suffix(".tmp.png")
    img.save(tmp)
    tmp.replace(path)
    return Path(path)


def _pm(stats: dict | None, value: float, fmt: str) -> str:
    """`value`, or the seeds' mean +- 95 % interval when there are several seeds."""
    if not stats or stats.get("n", 1) < 2:
        return format(value, fmt)
    return f"{format(stats['mean'], fmt)} &plusmn; {format(stats['ci95'], fmt)}"


def _attributes(metrics: dict) -> list[str]:
    """The domain's adherence keys, in its order, `all` last."""
    keys = list(next(iter(metrics["generations"].values()))["adherence"])
    return [k for k in keys if k != "all"] + ["all"]


def _results_table(metrics: dict) -> str:
    lat = metrics.get("latency", {})
    ref = lat.get(REFERENCE, {}).get("ms_per_image_b1")
    seeds = metrics.get("seeds") or {}
    keys = _attributes(metrics)
    cols = ["method", "steps", *[k.replace("_", " ") for k in keys[:-1]], "all", "clean images", "bg level sd",
            "domain FID", "ms/image (b=1)", "ms/image (b=8)", "speed-up vs Teacher (b=1)"]
    out = ["<table class='results'><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"]
    one_step = [k for k in metrics["generations"] if lat.get(k, {}).get("steps") == 1]
    best = max((metrics["generations"][k]["adherence"]["all"] for k in one_step), default=None)   # best one-step row
    for label, r in metrics["generations"].items():
        a, lt = r["adherence"], lat.get(label, {})
        steps = lt.get("steps", "-" if label == "real renders" else "")
        b1, b8 = lt.get("ms_per_image_b1"), lt.get("ms_per_image_b8")
        speed = f"{ref / b1:.1f}x" if (ref and b1) else "-"
        cls = " class='best'" if label in one_step and a["all"] == best else ""
        st = seeds.get(label, {})
        clean = r.get("fidelity", {}).get("clean", float("nan"))
        spread = r.get("fidelity", {}).get("bg_level_sd")
        out.append(f"<tr{cls}><td>{html.escape(label)}</td><td>{steps}</td>"
                   + "".join(f"<td>{_pm(st.get(k), a[k], '.3f')}</td>" for k in keys)
                   + f"<td>{_pm(st.get('clean'), clean, '.3f')}</td><td>{'-' if spread is None else _pm(st.get('bg_level_sd'), spread, '.1f')}</td>"
                   + (f"<td>{_pm(st.get('fid'), r['fid'], '.1f')}</td>" if "fid" in r else "<td>-</td>")
                   + f"<td>{'-' if b1 is None else f'{b1:.1f}'}</td>"
                   f"<td>{'-' if b8 is None else f'{b8:.1f}'}</td><td>{speed}</td></tr>")
    out.append("</table>")
    return "".join(out)


def variety_rows(metrics: dict) -> dict[str, dict]:
    """Per method: each free factor's within-prompt spread, its ratio to the Teacher's, the
    in-prompt recall (PRDC of the classifier features' within-prompt residuals) and its
    ratio, and `ratio`: the mean of the factor ratios. With several training seeds each
    entry is (mean, 95 % half-width) over seeds, a seed's ratio taken to the Teacher's
    value; else (value, nan)."""
    gens, seeds = metrics["generations"], metrics.get("seeds") or {}
    ref = gens.get(TEACHER, {})
    factors = list(ref.get("variety", {}))
    if not factors:
        return {}
    ref_recall = ref.get("prdc_in_prompt", {}).get("recall")
    out = {}
    for label, r in gens.items():
        if "variety" not in r:
            continue
        st = seeds.get(label, {})
        per_seed = lambda key, value: st[key]["values"] if st.get(key, {}).get("n", 1) > 1 else [value]   # noqa: E731
        spreads = {f: per_seed(f"spread_{f}", r["variety"][f]) for f in factors}
        if len({len(v) for v in spreads.values()}) > 1:   # seeds for some factors only: the means throughout
            spreads = {f: [r["variety"][f]] for f in factors}
        ratios = {f: [v / ref["variety"][f] if ref["variety"][f] else float("nan") for v in spreads[f]]
                  for f in factors}
        row = {f: _mc(spreads[f]) for f in factors}
        row.update({f"{f} ratio": _mc(ratios[f]) for f in factors})
        row["ratio"] = _mc([sum(x) / len(x) for x in zip(*ratios.values())])
        if "prdc_in_prompt" in r:
            rec = per_seed("recall_in_prompt", r["prdc_in_prompt"]["recall"])
            row["recall"] = _mc(rec)
            if ref_recall:   # (a Teacher with recall 0: no ratio)
                row["recall ratio"] = _mc([v / ref_recall for v in rec])
        if "diversity" in r:
            row["diversity"] = _mc(per_seed("diversity", r["diversity"]))
        out[label] = row
    return out


def _mc(values: list[float]) -> tuple[float, float]:
    from .eval.seeds import mean_ci

    st = mean_ci(values)
    return st["mean"], st["ci95"]


def _cell(v: tuple[float, float] | None, fmt: str) -> str:
    if v is None:
        return "-"
    m, h = v
    return format(m, fmt) if h != h else f"{format(m, fmt)} &plusmn; {format(h, fmt)}"


def _variety_table(metrics: dict) -> str:
    rows = variety_rows(metrics)
    if not rows:
        return ""
    factors = list(metrics["generations"][TEACHER]["variety"])
    cols = [*factors, *[f"{f} ratio" for f in factors], "ratio", "recall", "recall ratio", "diversity"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(f"<tr><td>{html.escape(label)}</td>" + "".join(
        f"<td>{_cell(row.get(c), '.2f' if c in factors or c == 'diversity' else '.3f')}</td>" for c in cols)
        + "</tr>" for label, row in rows.items())
    return ("<h2 id='variety'>Variety: several seeds of one prompt</h2><p>Each free factor a prompt leaves open "
            f"({', '.join(factors)}): its standard deviation over one prompt's {metrics['n_per_prompt']} images, "
            "mean over prompts, and its ratio to the Teacher's (ratio: the mean of the factor ratios). Recall: "
            "in-prompt recall (Kynkäänniemi et al. 2019), precision / recall of the domain classifier's features "
            "after each prompt's mean is removed from its images, real renders of the same prompts as the "
            "reference (plain recall is in metrics.json: the features cluster by prompt, so it stays near 1 "
            "even for a generator whose seed does nothing). Diversity: mean pairwise feature distance among "
            "one prompt's images. A generator whose seed does nothing scores 0 on every spread, recall and "
            "diversity.</p><table class='results'><tr><th>method</th>" + head + "</tr>" + body + "</table>"
            + _quality_variety_plot(rows, metrics))


def _quality_variety_plot(rows: dict[str, dict], metrics: dict, w: int = 460, h: int = 300) -> str:
    """Adherence (all) against the variety ratio, one point per method with its seeds' 95 %
    interval on both axes (none with one seed)."""
    seeds = metrics.get("seeds") or {}
    pts = []
    for i, (label, row) in enumerate(rows.items()):
        a = metrics["generations"][label]["adherence"]["all"]
        st = seeds.get(label, {}).get("all")
        y = (st["mean"], st["ci95"]) if st and st.get("n", 1) > 1 else (a, float("nan"))
        pts.append((label, row["ratio"], y, COLORS[i % len(COLORS)]))
    xmax = max(1.2, max(x[0] + (x[1] if x[1] == x[1] else 0) for _, x, _, _ in pts))
    L, R, T, B = 48, 150, 24, 34

    def px(x, y):
        return L + x / xmax * (w - L - R), T + (1 - y) * (h - T - B)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' class='plot' id='quality-variety'>",
             f"<text x='{L}' y='15' class='t'>adherence (all) against variety (ratio to the Teacher)</text>",
             f"<line x1='{L}' y1='{h - B}' x2='{w - R}' y2='{h - B}' stroke='#999'/>",
             f"<line x1='{L}' y1='{T}' x2='{L}' y2='{h - B}' stroke='#999'/>",
             f"<text x='{L}' y='{h - 18}' class='a'>0</text><text x='{w - R}' y='{h - 18}' class='a' "
             f"text-anchor='end'>{xmax:.2g}</text><text x='{(L + w - R) / 2}' y='{h - 4}' class='a' "
             "text-anchor='middle'>variety ratio</text>",
             f"<text x='{L - 4}' y='{T + 8}' class='a' text-anchor='end'>1</text>",
             f"<text x='{L - 4}' y='{h - B}' class='a' text-anchor='end'>0</text>"]
    x1, _ = px(1.0, 0)
    parts.append(f"<line x1='{x1:.1f}' y1='{T}' x2='{x1:.1f}' y2='{h - B}' stroke='#ccc' stroke-dasharray='3'/>")
    for i, (label, (x, dx), (y, dy), c) in enumerate(pts):
        cx, cy = px(x, y)
        if dx == dx:
            (a, _), (b, _) = px(x - dx, y), px(x + dx, y)
            parts.append(f"<line x1='{a:.1f}' y1='{cy:.1f}' x2='{b:.1f}' y2='{cy:.1f}' stroke='{c}'/>")
        if dy == dy:
            (_, a), (_, b) = px(x, y - dy), px(x, y + dy)
            parts.append(f"<line x1='{cx:.1f}' y1='{a:.1f}' x2='{cx:.1f}' y2='{b:.1f}' stroke='{c}'/>")
        parts.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='4' fill='{c}'><title>{html.escape(label)}: "
                     f"all {y:.3f}, variety {x:.2f}</title></circle>")
        parts.append(f"<text x='{w - R + 8}' y='{T + 12 + 14 * i}' class='a' fill='{c}'>{html.escape(label)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def seed_cells(rows: dict[str, dict], prompts: int = 3, per_prompt: int = 4):
    """(picks, {label: [image path or None]}): the first `per_prompt` seeds of each of the
    first `prompts` prompts, the same (prompt, seed) in every generated row."""
    manifests = {label: _manifest(r["folder"]) for label, r in rows.items()
                 if label != REAL and Path(r["folder"], "manifest.jsonl").exists()}
    if not manifests:
        return [], {}
    first = next(iter(manifests.values()))
    chosen = list(dict.fromkeys(e["prompt"] for e in first))[:prompts]
    picks = [(p, e["seed"]) for p in chosen for e in [x for x in first if x["prompt"] == p][:per_prompt]]
    return picks, _cells(rows, manifests, picks)


def _seed_grid(rows: dict[str, dict]) -> str:
    """Several seeds of the same prompts side by side for every model: a collapsed
    generator shows one picture repeated."""
    picks, cells = seed_cells(rows)
    if not picks:
        return ""
    return ("<h2 id='seeds'>Seeds side by side</h2><p>The same prompts, several seeds each, in every row: "
            "a generator whose seed does nothing shows one picture repeated.</p>" + _grid_table(picks, cells))


def _failures_table(gens: dict) -> str:
    """Per attribute, how many images got it wrong, by the value the prompt asked for."""
    rows = {k: r["failures"] for k, r in gens.items() if "failures" in r}
    if not rows:
        return ""
    first = next(iter(rows.values()))
    cols = [(attr, v) for attr, d in first.items() for v in d]
    head = "".join(f"<th>{html.escape(v)}</th>" for _, v in cols)
    body = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{f[a][v]}</td>" for a, v in cols) + "</tr>"
                   for k, f in rows.items())
    n = next(iter(gens.values()))["n_images"]
    return (f"<h2>Failures by attribute</h2><p>Images (of {n} per method) whose {' / '.join(first)} the judge "
            f"reads wrong, by the value the prompt asked for.</p><table class='results'><tr><th>method</th>{head}"
            f"</tr>{body}</table>")


def _diagnostics_table(gens: dict) -> str:
    rows = {k: r["diagnostics"] for k, r in gens.items() if r.get("diagnostics")}
    if not rows:
        return ""
    from .distill.diagnostics import KEYS as keys

    body = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(
        f"<td>{d[c]:.3g}</td>" if c in d else "<td>-</td>" for c in keys) + "</tr>" for k, d in rows.items())
    return ("<h2>Stage-2 latent diagnostics (last logged step)</h2><p>z_std: std of the generated Student latents "
            "(data: 1.0); reencode_err: ||z - E_s(clamp(D_s(z)))|| / ||z||; clipped: fraction of decoded pixels "
            "outside [-1, 1]; bridge_drift: ||B(z) - R(z)|| / ||R(z)|| against the pixel round-trip R.</p>"
            "<table class='results'><tr><th>method</th>" + "".join(f"<th>{c}</th>" for c in keys)
            + f"</tr>{body}</table>")


def _load_snippets(gens: dict) -> str:
    """How to load each exported Student: a diffusers pipeline (its own step count), or a
    LoRA on its base with the folder's scheduler."""
    out = []
    for label, r in gens.items():
        folder = Path(r["folder"]).parent.parent / "students" / Path(r["folder"]).name
        info = folder / "crossdistill.json"
        if not info.exists():
            continue
        meta = json.loads(info.read_text())
        steps, lora = meta.get("defaults", {}).get("steps", 1), meta.get("lora")
        prompt = example_prompt(meta.get("defaults", {}).get("domain"))
        if lora:
            sched = "DDIMScheduler" if steps == 1 else "LCMScheduler"
            load = (f"pipe = StableDiffusionPipeline.from_pretrained({lora['base']!r})\n"
                    f"pipe.load_lora_weights({str(folder)!r})\n"
                    f"pipe.scheduler = {sched}.from_pretrained({str(folder)!r}, subfolder='scheduler')\n")
        elif (folder / "model_index.json").exists():
            load = f"pipe = StableDiffusionPipeline.from_pretrained({str(folder)!r})\n"
        else:
            continue
        out.append(f"# {label}\n{load}"
                   f"image = pipe({prompt!r}, num_inference_steps={steps}, guidance_scale=0).images[0]")
    if not out:
        return ""
    return ("<h2>Load a Student</h2><pre>from diffusers import DDIMScheduler, LCMScheduler, StableDiffusionPipeline\n\n"
            + html.escape("\n\n".join(out)) + "</pre>")


def _svg_lines(series: dict[str, list[tuple[float, float]]], title: str, w: int = 460, h: int = 220,
               log_y: bool = False) -> str:
    import math

    pts = [(x, y) for s in series.values() for x, y in s if y == y and (y > 0 or not log_y)]
    if not pts:
        return ""
    f = (lambda y: math.log10(y)) if log_y else (lambda y: y)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(f(p[1]) for p in pts), max(f(p[1]) for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9)
    L, R, T, B = 48, 10, 24, 28

    def px(x, y):
        return L + (x - x0) / (x1 - x0) * (w - L - R), T + (1 - (f(y) - y0) / (y1 - y0)) * (h - T - B)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' class='plot'>",
             f"<text x='{L}' y='15' class='t'>{html.escape(title)}</text>",
             f"<line x1='{L}' y1='{h - B}' x2='{w - R}' y2='{h - B}' stroke='#999'/>",
             f"<line x1='{L}' y1='{T}' x2='{L}' y2='{h - B}' stroke='#999'/>",
             f"<text x='{L}' y='{h - 8}' class='a'>{x0:g}</text><text x='{w - R}' y='{h - 8}' class='a' "
             f"text-anchor='end'>step {x1:g}</text>",
             f"<text x='{L - 4}' y='{T + 8}' class='a' text-anchor='end'>{(10 ** y1 if log_y else y1):.3g}</text>",
             f"<text x='{L - 4}' y='{h - B}' class='a' text-anchor='end'>{(10 ** y0 if log_y else y0):.3g}</text>"]
    for i, (name, s) in enumerate(series.items()):
        s = [(x, y) for x, y in s if y == y and (y > 0 or not log_y)]
        if not s:
            continue
        c = COLORS[i % len(COLORS)]
        parts.append(f"<polyline fill='none' stroke='{c}' stroke-width='1.5' points='"
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in (px(x, y) for x, y in s)) + "'/>")
        parts.append(f"<text x='{w - R - 4}' y='{T + 12 + 12 * i}' class='a' text-anchor='end' fill='{c}'>"
                     f"{html.escape(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _loss_plots(histories: dict[str, str]) -> str:
    plots = []
    for name, path in histories.items():
        recs = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
        if not recs:
            continue
        keys = [k for k in ("loss", "rec", "attn", "dmd", "fake") if k in recs[0]]
        series = {k: [(r["step"], float(r[k])) for r in recs if k in r] for k in keys}
        plots.append(_svg_lines(series, name, log_y=True))
    return "".join(plots) or "<p>no training histories</p>"


def _quality_curves(curves: dict[str, list[dict]]) -> str:
    """Adherence (all) and clean images of each run's sample grids against the step."""
    if not curves:
        return ""
    plots = [_svg_lines({name: [(r["step"], r[key]) for r in rows] for name, rows in curves.items()}, title)
             for key, title in (("all", "adherence (all) of the sample grids"), ("clean", "clean images of the sample grids"))]
    n = max(r.get("n", 0) for rows in curves.values() for r in rows)
    return ("<h2 id='quality-curves'>Quality versus step</h2><p>Each stage-2 run's one-step sample grids (saved every "
            "train.sample_every steps; the same prompts and noise at every step), scored with the domain's judge. "
            f"{n} images per grid: a trend, not a measurement (the results table is one).</p>" + "".join(plots))


def _bridge_section(bridge_rows: dict[str, dict], seeds: dict | None = None) -> str:
    if not bridge_rows:
        return ""
    keys = [k for k in ("latent_mse", "roundtrip_drift", "attn_error", "object_attn_error", "psnr")
            if any(k in m for m in bridge_rows.values())]
    heads = {"latent_mse": "latent MSE", "roundtrip_drift": "drift from round-trip", "attn_error": "attention error",
             "object_attn_error": "per-object attention error", "psnr": "PSNR (dB)"}
    rows = "".join(f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{m.get(k, float('nan')):.4g}</td>" for k in keys)
                   + (f"<td>{m['adherence']['all']:.3f}</td>" if "adherence" in m else "<td>-</td>") + "</tr>"
                   for n, m in bridge_rows.items())
    table = ("<table class='results'><tr><th>Bridge</th>" + "".join(f"<th>{heads[k]}</th>" for k in keys)
             + f"<th>adherence of Teacher-decoded bridged latents</th></tr>{rows}</table>")
    if seeds:   # one row per variant: mean +- 95 % interval over its stage-1 seeds
        skeys = keys + ["adherence"]
        srows = "".join(f"<tr><td>{html.escape(v)}</td>" + "".join(
            f"<td>{_pm(st[k], st[k]['mean'], '.4g')}</td>" if k in st else "<td>-</td>" for k in skeys) + "</tr>"
            for v, st in seeds.items())
        n = max(st[k]["n"] for st in seeds.values() for k in st)
        table += (f"<p>Over {n} stage-1 seeds (mean &plusmn; 95 % interval):</p><table class='results'><tr><th>Bridge</th>"
                  + "".join(f"<th>{heads.get(k, k)}</th>" for k in skeys) + f"</tr>{srows}</table>")
    bars = []
    for k in ("latent_mse", "attn_error"):
        vals = {n: m[k] for n, m in bridge_rows.items() if k in m}
        top = max(vals.values()) or 1
        h = 26 + 22 * len(vals)
        svg = [f"<svg xmlns='http://www.w3.org/2000/svg' width='360' height='{h}' class='plot'>"
               f"<text x='4' y='15' class='t'>{k} (lower is better)</text>"]
        for i, (n, v) in enumerate(vals.items()):
            y = 24 + 22 * i
            svg.append(f"<text x='110' y='{y + 13}' class='a' text-anchor='end'>{html.escape(n)}</text>"
                       f"<rect x='114' y='{y}' width='{200 * v / top:.1f}' height='16' fill='{COLORS[i % 8]}'/>"
                       f"<text x='{118 + 200 * v / top:.1f}' y='{y + 13}' class='a'>{v:.4f}</text>")
        svg.append("</svg>")
        bars.append("".join(svg))
    return table + "".join(bars)


CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table.results{border-collapse:collapse;font-size:13px}table.results td,table.results th{border:1px solid #ccc;padding:4px 8px;text-align:right}
table.results td:first-child{text-align:left}tr.best td{background:#e8f4e8;font-weight:600}
table.grid{border-collapse:collapse;font-size:11px}table.grid td{padding:2px}table.grid img{width:96px;height:96px;image-rendering:pixelated;display:block}
th.p{font-weight:normal;width:100px;vertical-align:bottom}th.m{text-align:right;padding-right:8px;font-size:12px}.s{color:#888}
svg.plot{margin:6px 12px 6px 0;border:1px solid #eee}svg .t{font-size:12px;font-weight:600}svg .a{font-size:10px}
pre{background:#f6f6f6;padding:8px;font-size:11px;overflow:auto;max-height:320px}.summary{font-size:15px;background:#f3f7fb;padding:10px}"""


def _differences(seeds: dict) -> str:
    """Paired per-seed differences (a - b) with their 95 % intervals."""
    diffs = {k: v for k, v in seeds.items() if " - " in k}
    if not diffs:
        return ""
    keys = list(next(iter(diffs.values())))   # the domain's attributes, all, clean, fid (seed_summary's order)

    def cell(st, fmt):
        return f"{format(st['mean'], '+' + fmt)} &plusmn; {format(st['ci95'], fmt)}" if st else "-"

    rows = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(
        f"<td>{cell(d.get(c), '.1f' if c == 'fid' else '.3f')}</td>" for c in keys)
        + f"<td>{d['all']['n']}</td></tr>" for k, d in diffs.items())
    head = "".join(f"<th>{'domain FID' if c == 'fid' else html.escape(c.replace('_', ' '))}</th>" for c in keys)
    return ("<h2>Paired differences over training seeds</h2><p>Per seed a - b, then mean &plusmn; 95 % interval; "
            "an interval that contains 0 does not separate the two.</p><table class='results'><tr><th>a - b</th>"
            f"{head}<th>seeds</th></tr>{rows}</table>")


def _summary(metrics: dict) -> str:
    g = metrics["generations"]
    get = lambda k: g.get(k, {}).get("adherence", {}).get("all")   # noqa: E731
    clean = lambda k: g.get(k, {}).get("fidelity", {}).get("clean", float("nan"))   # noqa: E731
    cross, shared, teacher, base = get(CROSS), get(SHARED), get(TEACHER), get(BASE)
    if None in (cross, shared, teacher, base):
        return ""
    lat = metrics.get("latency", {})
    speed = ""
    if TEACHER in lat and CROSS in lat:
        speed = (f" It runs in one step: {lat[CROSS]['ms_per_image_b1']:.1f} ms per image vs the "
                 f"Teacher's {lat[TEACHER]['ms_per_image_b1']:.1f} ms "
                 f"({lat[TEACHER]['ms_per_image_b1'] / lat[CROSS]['ms_per_image_b1']:.0f}x faster).")
    gap = (metrics.get("seeds") or {}).get(f"{CROSS} - {SHARED}", {}).get("all")
    gap_txt = (f" Over {gap['n']} training seeds the cross-space minus shared-space difference in adherence (all) is "
               f"<b>{gap['mean']:+.3f} &plusmn; {gap['ci95']:.3f}</b> (95 % interval)." if gap else "")
    return (f"<p class='summary'>The cross-space one-step Student follows the prompt ({', '.join(_attributes(metrics)[:-1])} "
            f"all right) in <b>{cross:.1%}</b> of images ({clean(CROSS):.0%} with a clean background), vs "
            f"<b>{shared:.1%}</b> ({clean(SHARED):.0%} clean) for the shared-space one-step "
            f"Student distilled from the Student base with the same loop and budget, {base:.1%} for the Student base "
            f"with its 50-step sampler and {teacher:.1%} for the Teacher.{gap_txt}{speed} "
            f"{metrics['n_per_prompt']} images for each of {metrics['prompts']} prompts per method.</p>")


def write_report(out: Path, metrics: dict) -> Path:
    """Write out/report.html (atomically) from the demo's metrics."""
    out = Path(out)
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>crossdistill demo report</title>
<style>{CSS}</style></head><body>
<h1>crossdistill: cross-space one-step distillation, domain {html.escape(str(metrics.get("domain", "shapes")))}</h1>
{_summary(metrics)}
<h2>Results</h2>
{_results_table(metrics)}
<p>Adherence: fraction of images in which the judge reads each attribute as the prompt asks ({", ".join(_attributes(metrics)[:-1])};
all: every one at once). Domain FID: Fréchet distance of the domain classifier's features to real renders of the same prompts
(equal image counts in every row). Clean images: fraction whose background outside the object is flat
(per-channel std &lt; 5 of 255), untinted (channel means within 6) and at a render's gray level (175-235).
Bg level sd: the standard deviation of that gray level over the row's images (renders: 14.7, uniform in 180-230), a diversity
measure the classifier's FID cannot see (its features ignore the background). With several training seeds: mean &plusmn; 95 % interval over seeds. Latency: denoiser calls + VAE decode per image, one process, prompts pre-encoded.</p>
<h2>Samples (same prompt and seed in every row)</h2>
{_grid(metrics["generations"])}
{_seed_grid(metrics["generations"])}
{_variety_table(metrics)}
{_failures_table(metrics["generations"])}
{_diagnostics_table(metrics["generations"])}
<h2>Training curves</h2>
{_loss_plots(metrics.get("histories", {}))}
{_quality_curves(metrics.get("curves", {}))}
<h2>Bridge (stage 1, held-out)</h2>
{_bridge_section(metrics.get("bridge", {}), metrics.get("bridge_seeds"))}
{_differences(metrics.get("seeds") or {})}
{_load_snippets(metrics["generations"])}
<h2>Config and provenance</h2>
<pre>{html.escape(json.dumps({"demo": metrics.get("config", {}), "stage_time_s": metrics.get("stage_time_s", {}),
                          "wall_time_s": metrics.get("wall_time_s"),
                          "provenance": metrics.get("provenance") or provenance()}, indent=1, default=str))}</pre>
</body></html>"""
    tmp = out / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out / "report.html")
    write_grid_png(metrics["generations"], out / "grid.png")
    write_grid_png(metrics["generations"], out / "seeds.png", chosen=seed_cells(metrics["generations"]))
    return out / "report.html"
