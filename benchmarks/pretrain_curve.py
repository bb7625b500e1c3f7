"""The learning curve of a domain's pretraining: the EMA weights of the resumable
checkpoints of a denoiser stage present now (pretraining keeps the newest two and removes
them when the stage finishes, so run this while it trains) and of the finished stage, sampled with the model's default
sampler on the domain's evaluation prompts and judged.

    python benchmarks/pretrain_curve.py --domain pairs --run runs/pretrain-pairs --stage teacher \
        --n-per-prompt 2 --out docs/measurements/pairs/teacher_curve.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def main() -> None:
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    from crossdistill.denoisers import build_denoiser, load_denoiser
    from crossdistill.domains import get
    from crossdistill.eval.harness import evaluate
    from crossdistill.generate import GenerateConfig, generate

    ap = argparse.ArgumentParser()
    ap.add_argument("--domain", required=True)
    ap.add_argument("--run", type=Path, required=True, help="the pretrain folder (crossdistill <domain> pretrain --out)")
    ap.add_argument("--stage", default="teacher", choices=("teacher", "student-base"))
    ap.add_argument("--n-per-prompt", type=int, default=2)
    ap.add_argument("--seed", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="append one JSON row per point here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dom = get(a.domain)
    points = sorted((a.run / f".{a.stage}.ckpt").glob("ckpt-*"))
    finished = a.run / a.stage / "model_index.json"
    vae = a.run / ("vae-teacher" if a.stage == "teacher" else "vae-student")
    for point in points + ([finished.parent] if finished.exists() else []):
        if point.name.startswith("ckpt-"):
            den = build_denoiser(dom.teacher if a.stage == "teacher" else dom.student, seed=0)
            den = den.with_components(vae=AutoencoderKL.from_pretrained(vae).eval())
            tensors = load_file(str(point / "state.safetensors"))
            den.model.eval().load_state_dict({k[len("module/ema/"):]: v for k, v in tensors.items()
                                       if k.startswith("module/ema/")})
            step = int(point.name.split("-")[1])
        else:
            den, step = load_denoiser(point), json.loads((point / "train_log.json").read_text())["config"]
            step = step[a.stage.replace("-", "_")]["steps"]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "gen"
            generate(GenerateConfig(a.stage, dom.eval_prompts(), folder, n_per_prompt=a.n_per_prompt, seed=a.seed,
                                    batch_size=60), den=den, progress=False)
            m = evaluate(folder, classifier=str(a.run / "classifier"), write=False)
        row = {"domain": dom.name, "stage": a.stage, "step": step, "n_images": m["n_images"],
               "adherence": m["adherence"], "clean": m["fidelity"]["clean"]}
        print(json.dumps(row), flush=True)
        if a.out:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
