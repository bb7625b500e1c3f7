"""report.html opens in headless Chromium (Debian `chromium`, installed by `make test`):
a screenshot is taken, every image has loaded, the results table is there."""

import json
import re
import shutil
import subprocess

import numpy as np
from PIL import Image

from crossdistill.report import write_report

LABELS = ["real renders", "Teacher (multi-step)", "Student base (multi-step)", "shared-space one-step",
          "cross-space one-step"]
PROMPTS = ["a red circle at the top", "a blue square on the left", "a green triangle in the center"]


def _browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is missing: `make test` installs it (Debian package `chromium`)"
    return exe


def _fake_demo(root):
    rng = np.random.default_rng(0)
    gens = {}
    for i, label in enumerate(LABELS):
        folder = root / "generations" / str(i)
        folder.mkdir(parents=True)
        with open(folder / "manifest.jsonl", "w") as f:
            for k, p in enumerate(PROMPTS * 2):
                Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{k:05d}.png")
                f.write(json.dumps({"file": f"{k:05d}.png", "prompt": p, "seed": 100 + k}) + "\n")
        a = 1.0 - 0.1 * i
        gens[label] = {"n_images": 6, "adherence": {"color": a, "shape": a, "position": a, "all": a},
                       "fid": 10.0 * (i + 1), "folder": str(folder), "fidelity": {"clean": a},
                       "failures": {"color": {"red": i}, "shape": {"circle": 0}, "position": {"top": 1}}}
        if "one-step" in label:
            gens[label]["diagnostics"] = {"z_std": 1.5, "reencode_err": 0.5, "clipped": 0.01}
        spread = 0.0 if label == "shared-space one-step" else 2.0 / (i + 1)   # shared-space: the seed does nothing
        gens[label].update(variety={"size": spread, "background": 5 * spread}, diversity=spread,
                           prdc_in_prompt={"precision": 1.0, "recall": spread / 2, "density": 1.0, "coverage": 0.5})
    student = root / "students" / "4"          # an exported Student beside the last row's generations
    student.mkdir(parents=True)
    (student / "model_index.json").write_text("{}")
    (student / "crossdistill.json").write_text(json.dumps({"defaults": {"steps": 1}}))
    hist = root / "history.jsonl"
    hist.write_text("".join(json.dumps({"step": s, "dmd": 1 / s, "fake": 0.5 + 0.1 / s}) + "\n" for s in range(1, 30)))
    lat = {label: {"steps": 28 if "Teacher" in label else 1, "ms_per_image_b1": 400.0 if "Teacher" in label else 20.0,
                   "ms_per_image_b8": 160.0 if "Teacher" in label else 5.0} for label in LABELS[1:]}
    return {"generations": gens, "latency": lat, "bridge": {"bridge": {"latent_mse": 0.02, "attn_error": 0.002,
            "psnr": 33.0, "adherence": {"all": 0.99}}, "round-trip": {"latent_mse": 0.03, "attn_error": 0.003,
                                                                      "psnr": 32.0}},
            "histories": {"stage 2: cross-space one-step": str(hist)}, "n_per_prompt": 2, "prompts": 3,
            "curves": {"cross-space one-step": [{"step": s, "n": 16, "all": s / 400, "clean": 0.5} for s in (100, 200, 300)],
                       "shared-space one-step": [{"step": s, "n": 16, "all": s / 500, "clean": 0.2} for s in (100, 200, 300)]},
            "seeds": {"cross-space one-step": {"all": {"mean": 0.6, "ci95": 0.05, "n": 3, "values": [0.55, 0.6, 0.65]},
                                               "spread_size": {"n": 3, "values": [0.2, 0.4, 0.6]},
                                               "spread_background": {"n": 3, "values": [1.0, 2.0, 3.0]}},
                      "cross-space one-step - shared-space one-step": {
                          "all": {"mean": 0.1, "ci95": 0.04, "n": 3, "values": [0.06, 0.1, 0.14]}}},
            "config": {"out": str(root)}, "wall_time_s": 1.0}


def test_report_renders_in_headless_chromium(tmp_path):
    metrics = _fake_demo(tmp_path)
    page = write_report(tmp_path, metrics)
    html = page.read_text()
    assert "src='data:image/png;base64," in html and "<svg" in html      # self-contained: inlined images, plots
    # a probe page: the report plus a script that reports, after load, what the browser decoded
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", """<script>window.addEventListener('load', () => {
      const imgs = [...document.images];
      const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
      const tables = document.querySelectorAll('table.results').length;
      const svgs = document.querySelectorAll('svg.plot').length;
      const shown = (el) => { if (!el) return 0; const r = el.getBoundingClientRect();
        return r.width > 100 && r.height > 50 && r.left >= 0 && r.right <= document.documentElement.scrollWidth + 1 ? 1 : 0; };
      const curves = document.getElementById('quality-curves');
      const layout = [shown(document.querySelector('table.results')), shown(document.querySelector('table.grid')),
                      shown(curves && curves.nextElementSibling && curves.nextElementSibling.nextElementSibling)];
      document.body.setAttribute('data-probe', `images=${imgs.length} loaded=${ok} tables=${tables} plots=${svgs}`
        + ` layout=${layout.join(',')}`);
    });</script></body>"""))
    exe = _browser()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
    dom = subprocess.run([exe, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'data-probe="images=(\d+) loaded=(\d+) tables=(\d+) plots=(\d+) layout=([\d,]+)"', dom)
    assert m, dom[-2000:]
    images, loaded, tables, plots = map(int, m.groups()[:4])
    assert m.group(5) == "1,1,1"   # laid out with a size: the results table, the sample grid, the quality curves
    # every grid image decoded: the sample grid (6 columns) and the seeds grid (3 prompts x 2 seeds, no real renders)
    assert images == len(LABELS) * 6 + (len(LABELS) - 1) * 6 and loaded == images
    assert tables == 6 and plots >= 6   # results, variety, failures, diagnostics, Bridge, paired differences;
    # curves, bars, quality against variety
    assert "Quality versus step" in html and "adherence (all) of the sample grids" in html
    # variety: the Teacher's ratio is 1, a row whose seed does nothing 0, seeds give intervals
    assert "id='variety'" in html and "id='seeds'" in html and "id='quality-variety'" in html
    rows = dict(re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", html.split("id='variety'")[1].split("</table>")[0]))
    assert rows["Teacher (multi-step)"] == "1.00" and rows["shared-space one-step"] == "0.00"
    assert rows["cross-space one-step"] == "0.40 &plusmn; 0.50"   # the three seeds' size spread
    assert "shared-space one-step: all 0.700, variety 0.00" in html   # its point on the plot
    assert (tmp_path / "seeds.png").exists()
    assert "0.600 &plusmn; 0.050" in html and "+0.100 &plusmn; 0.040" in html   # seeds: mean +- 95 % interval
    assert "StableDiffusionPipeline.from_pretrained(" in html and "num_inference_steps=1" in html   # load snippet
    assert "&quot;commit&quot;" in html and "&quot;cpu&quot;" in html                     # provenance
    shot = tmp_path / "shot.png"
    subprocess.run([exe, *flags, "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (1600, 1280) and img.std() > 10    # a rendered page, not a blank one


def test_quality_curve_scores_each_saved_sample_grid(tmp_path):
    """Renders of the prompts score all = clean = 1; the same grid with noise on the
    background scores clean 0 (the judge, not a constant)."""
    from crossdistill.data.images import tile
    from crossdistill.domains import get
    from crossdistill.eval.curves import sample_curve

    dom = get("shapes")
    prompts = dom.eval_prompts()[:16]
    renders = np.stack(dom.reference_renders(prompts, seed=3))
    rng = np.random.default_rng(0)
    noisy = np.clip(renders.astype(int) + rng.integers(-40, 40, renders.shape), 0, 255).astype(np.uint8)
    folder = tmp_path / "run" / "samples"
    folder.mkdir(parents=True)
    (folder / "prompts.json").write_text(json.dumps(prompts))
    Image.fromarray(tile(renders)).save(folder / "step-0000100.png")
    Image.fromarray(tile(noisy)).save(folder / "step-0000200.png")
    rows = sample_curve(tmp_path / "run")
    assert [r["step"] for r in rows] == [100, 200] and rows[0]["n"] == 16
    assert rows[0]["all"] > 0.9 and rows[0]["clean"] == 1.0 and rows[1]["clean"] == 0.0
