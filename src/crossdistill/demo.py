"""`crossdistill demo`: the shapes-world pipeline, end to end, as far as it exists.

Real renders, the Teacher (multi-step) and the Student base (multi-step) are generated
and scored on all 90 prompts; the Bridge is trained (stage 1) and evaluated against
the round-trip baseline; the cross-space one-step Student (through that Bridge) and the
shared-space one-step baseline are distilled (stage 2), exported, generated and scored.
Every stage writes its own folder; rerunning the same command skips finished stages.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CrossdistillError


@dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    n_per_prompt: int = 8          # 90 prompts x 8 images per model
    seed: int = 100_000            # generation seeds: seed + k
    bridge_steps: int = 600
    bridge_images: int = 4000
    distill_steps: int = 400
    prompts: int = 90              # first N of the 90 prompts (tests use fewer)
    threads: int = 2


def _stage(name: str) -> None:
    print(f"\n== {name} ==", flush=True)


def run_demo(cfg: DemoConfig) -> dict:
    from .artifacts import NAMED
    from .ui import console
    from .bridge.report import evaluate_runs, table as bridge_table
    from .bridge.stage1 import DataConfig, Stage1Config, train_bridge
    from .eval.harness import evaluate, table
    from .generate import GenerateConfig, generate
    from .io import RUN_MARKER
    from .toy.data import export
    from .toy.shapes import all_prompts
    from .train import TrainConfig

    for name in ("shapes-teacher", "shapes-student-base", "shapes-classifier"):
        if not NAMED[name].exists():
            raise CrossdistillError(f"shapes-world model {name} is missing; run `crossdistill shapes pretrain --install`")
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not (out / RUN_MARKER).exists():
        raise CrossdistillError(f"{out} exists and is not a crossdistill demo folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_MARKER).write_text("crossdistill demo\n")
    prompts = all_prompts()[:cfg.prompts]
    t0 = time.time()
    timings = {}
    rows = {}

    _stage("real renders (reference row)")
    real = out / "generations" / "real"
    if not (real / "manifest.jsonl").exists():
        export(len(prompts) * cfg.n_per_prompt, 64, real, seed=cfg.seed)
    rows["real renders"] = evaluate(real)

    for label, model in (("Teacher (multi-step)", "shapes-teacher"), ("Student base (multi-step)", "shapes-student-base")):
        _stage(label)
        folder = out / "generations" / model
        start = time.time()
        if not (folder / "manifest.jsonl").exists():
            generate(GenerateConfig(model, prompts, folder, n_per_prompt=cfg.n_per_prompt, seed=cfg.seed,
                                    batch_size=60))
            timings[model] = time.time() - start
        rows[label] = evaluate(folder)
    console().print(table(rows))

    _stage("stage 1: Bridge")
    bridge_run = out / "bridge"
    if not (bridge_run / "bridge" / "bridge.json").exists():
        start = time.time()
        train_bridge(Stage1Config(data=DataConfig(images=cfg.bridge_images),
                                  train=TrainConfig(steps=cfg.bridge_steps, batch=32, checkpoint_every=100)),
                     bridge_run)
        timings["bridge"] = time.time() - start
    bridge_rows = evaluate_runs([bridge_run], "shapes-teacher", "shapes-student-base",
                                images=min(360, len(prompts) * cfg.n_per_prompt * 4))
    console().print(bridge_table(bridge_rows))

    from .distill.stage2 import Stage2Config, distill

    for label, name, teacher, bridge in (
            ("shared-space one-step", "shared-space", "shapes-student-base", "identity"),
            ("cross-space one-step", "cross-space", "shapes-teacher", str(bridge_run / "bridge"))):
        _stage(f"stage 2: {label}")
        run = out / "students" / name
        if not (run / "student" / "model_index.json").exists():
            start = time.time()
            distill(Stage2Config(teacher=teacher, bridge=bridge,
                                 train=TrainConfig(steps=cfg.distill_steps, batch=16, checkpoint_every=50)),
                    run, prompts)
            timings[name] = time.time() - start
        folder = out / "generations" / name
        if not (folder / "manifest.jsonl").exists():
            generate(GenerateConfig(str(run / "student"), prompts, folder, n_per_prompt=cfg.n_per_prompt,
                                    seed=cfg.seed, batch_size=90))
        rows[label] = evaluate(folder)
    console().print(table(rows))

    metrics = {"generations": rows, "bridge": bridge_rows, "wall_time_s": round(time.time() - t0, 1),
               "stage_time_s": timings}
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1))
    tmp.replace(out / "metrics.json")
    print(f"\nwrote {out / 'metrics.json'} ({metrics['wall_time_s']} s)")
    return metrics
