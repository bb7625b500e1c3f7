"""Stage-2 learning curves and tuning runs on a domain (default config: the shapes world).

Trains one stage-2 config to each step count in `--steps` in turn (each a resume of
the same run: the loop's per-step randomness makes that identical to one long run),
exports the EMA Student, generates `--n-per-prompt` images for each of the domain's
evaluation prompts (seeds 100000 + k; world I: 90, world II: 120) and scores them; prints one JSON line per point and appends it to `--log`.

    python benchmarks/distill_curve.py --name cross --config distill_shapes \
        --set bridge_dir=runs/demo/bridge/bridge --steps 200 400 --n-per-prompt 2

The shared-space baseline and the cross-space Student are tuned with this same script
and the same grids (docs/distill.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", nargs="*", default=[], dest="overrides")
    ap.add_argument("--steps", nargs="+", type=int, required=True)
    ap.add_argument("--n-per-prompt", type=int, default=4)
    ap.add_argument("--root", default="runs/curves")
    ap.add_argument("--log", default="runs/curves/results.jsonl")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from crossdistill.config import load_config, to_dict
    from crossdistill.distill.diagnostics import last_logged
    from crossdistill.distill.config import DistillConfig
    from crossdistill.distill.run import distill
    from crossdistill.eval.harness import evaluate
    from crossdistill.generate import GenerateConfig, generate
    from crossdistill.data.sources import domain_of, read_prompts
    from crossdistill.denoisers import load_denoiser

    prompts = eval_prompts = None
    run = Path(a.root) / a.name
    t0 = time.time()
    for steps in a.steps:
        cfg = load_config(DistillConfig, Path(a.config), a.overrides + [f"train.steps={steps}"])
        if prompts is None:   # train on the domain's prompts, score on its evaluation prompts
            teacher = load_denoiser(cfg.teachers[0].model)   # several Teachers: the first's domain
            prompts = read_prompts(cfg.prompts, teacher)
            eval_prompts = domain_of(teacher).eval_prompts()
        distill(cfg, run, prompts, progress=False)
        folder = run / f"gen-{steps}"
        generate(GenerateConfig(str(run / "student"), eval_prompts, folder, n_per_prompt=a.n_per_prompt,
                                seed=100_000, batch_size=90, overwrite=True), progress=False)
        m = evaluate(folder)
        diag = last_logged(run / "history.jsonl")
        row = {"name": a.name, "steps": steps, "overrides": a.overrides, "config": a.config,
               "adherence": m["adherence"], "clean": m["fidelity"]["clean"], "fid": m["fid"],
               "diagnostics": diag, "fidelity": m["fidelity"], "failures": m["failures"], "n_images": m["n_images"],
               "train_s": round(time.time() - t0, 1), "resolved": to_dict(cfg)}
        print(json.dumps({k: row[k] for k in ("name", "steps", "adherence", "clean", "fid", "diagnostics",
                                              "train_s")}), flush=True)
        Path(a.log).parent.mkdir(parents=True, exist_ok=True)
        with open(a.log, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
