"""`crossdistill demo`: the shapes-world method end to end, measured, in one folder.

From the committed Teacher and Student base: real renders (reference row), the
Teacher and the Student base (multi-step), the stage-1 Bridge (and its held-out
evaluation against the round-trip), the shared-space one-step baseline and the
cross-space one-step Student (stage 2, same loop, same budget), each exported as a
diffusers pipeline, generated with the same prompts and seeds and scored; latency of
every model; `report.html` and `metrics.json`. `--full` adds the ablations (round-trip,
projector-only and no-attention-fidelity Bridges, each distilled alike) and 8 images
per prompt. Every stage writes its own folder atomically; rerunning the same command
skips what is finished.

    DIR/metrics.json  DIR/report.html  DIR/demo.log  DIR/config.json
    DIR/students/<method>/      exported StableDiffusionPipeline folders (1 step)
    DIR/bridge/bridge/          the stage-1 Bridge (DIR/bridge: its run, logs, history)
    DIR/runs/<method>/          stage-2 runs (checkpoints, history.jsonl, tensorboard logs)
    DIR/ablations/<variant>/    --full: the other stage-1 Bridges
    DIR/generations/<method>/   PNGs + manifest.jsonl + metrics.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CrossdistillError


@dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    full: bool = False             # + ablations, 8 images per prompt
    n_per_prompt: int | None = None   # images per prompt per model (default 4; --full 8)
    seed: int = 100_000            # generation seeds: seed + k
    bridge_steps: int = 300
    bridge_images: int = 2000
    distill_steps: int = 300
    prompts: int = 90              # first N of the 90 prompts (tests use fewer)
    bench_repeats: int = 3
    threads: int = 2

    def resolved(self) -> "DemoConfig":
        n = self.n_per_prompt or (8 if self.full else 4)
        return dataclasses.replace(self, n_per_prompt=n)


@dataclass
class Method:
    label: str          # row name
    slug: str           # folder name
    teacher: str
    bridge: str         # "identity", "roundtrip", or a stage-1 variant name (DIR/bridge, DIR/ablations/<v>)
    guidance: float     # real-score CFG
    fake_updates: int   # fake-score updates per generator step


# Each method at the best setting of the same one-factor search (docs/distill.md, "Tuning"):
# shared-space: its Teacher's own guidance (7.5), 1 fake update; cross-space: 2x its
# Teacher's guidance (4.0), 2 fake updates. lr 2e-4 was best for both.
SHARED = dict(teacher="shapes-student-base", guidance=7.5, fake_updates=1)
CROSS = dict(teacher="shapes-teacher", guidance=4.0, fake_updates=2)
BRIDGES = {"bridge": {}, "bridge-no-attn": {"attn.weight": 0.0}, "projector-only": {"bridge.kind": "projector_only"}}
MAIN = [Method("shared-space one-step", "shared-space", bridge="identity", **SHARED),
        Method("cross-space one-step", "cross-space", bridge="bridge", **CROSS)]
ABLATIONS = [Method("cross-space, round-trip Bridge", "cross-roundtrip", bridge="roundtrip", **CROSS),
             Method("cross-space, projector-only Bridge", "cross-projector-only", bridge="projector-only", **CROSS),
             Method("cross-space, Bridge without attention fidelity", "cross-no-attn", bridge="bridge-no-attn",
                    **CROSS)]


class _Log:
    """Stage banners on the console and, timestamped, in DIR/demo.log."""

    def __init__(self, path: Path, t0: float):
        self.path, self.t0 = path, t0

    def stage(self, name: str) -> None:
        print(f"\n== {name} ==  ({time.time() - self.t0:.0f} s)", flush=True)
        self(f"stage: {name}")

    def __call__(self, msg: str) -> None:
        with open(self.path, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} +{time.time() - self.t0:7.1f}s  {msg}\n")


def _bridge_dir(out: Path, variant: str) -> Path:
    return out / "bridge" if variant == "bridge" else out / "ablations" / variant


def run_demo(cfg: DemoConfig) -> dict:
    from .artifacts import NAMED
    from .bridge.report import evaluate_runs
    from .bridge.stage1 import DataConfig, Stage1Config, train_bridge
    from .config import load_config, to_dict
    from .distill.stage2 import FakeConfig, Stage2Config, distill
    from .eval.bench import bench, table as bench_table
    from .eval.harness import evaluate, table
    from .generate import GenerateConfig, generate
    from .io import RUN_MARKER
    from .report import write_report
    from .toy.data import export
    from .toy.shapes import all_prompts
    from .train import TrainConfig
    from .ui import console

    cfg = cfg.resolved()
    for name in ("shapes-teacher", "shapes-student-base", "shapes-classifier"):
        if not NAMED[name].exists():
            raise CrossdistillError(f"shapes-world model {name} is missing; run `crossdistill shapes pretrain --install`")
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not (out / RUN_MARKER).exists():
        raise CrossdistillError(f"{out} exists and is not a crossdistill demo folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_MARKER).write_text("crossdistill demo\n")
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1, default=str))
    prompts = all_prompts()[:cfg.prompts]
    t0 = time.time()
    log = _Log(out / "demo.log", t0)
    log(f"demo start: {json.dumps(to_dict(cfg), default=str)}")
    timings_path = out / "stage_times.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    resumed = bool(timings)

    def timed(key: str, fn) -> None:
        start = time.time()
        fn()
        timings[key] = round(time.time() - start, 1)
        timings_path.write_text(json.dumps(timings, indent=1))
        log(f"{key} done in {timings[key]} s")

    def gen(model: str, folder: Path, batch: int) -> None:
        generate(GenerateConfig(model, prompts, folder, n_per_prompt=cfg.n_per_prompt, seed=cfg.seed,
                                batch_size=batch))

    rows, models = {}, {}
    log.stage("real renders (reference row)")
    real = out / "generations" / "real"
    if not (real / "manifest.jsonl").exists():
        export(len(prompts) * cfg.n_per_prompt, 64, real, seed=cfg.seed)
    rows["real renders"] = evaluate(real)

    for label, model in (("Teacher (multi-step)", "shapes-teacher"), ("Student base (multi-step)", "shapes-student-base")):
        log.stage(f"{label}: generate {len(prompts) * cfg.n_per_prompt} images")
        folder = out / "generations" / model
        if not (folder / "manifest.jsonl").exists():
            timed(f"generate {model}", lambda: gen(model, folder, 60))
        rows[label] = evaluate(folder)
        models[label] = model
    console().print(table(rows))

    methods = MAIN + (ABLATIONS if cfg.full else [])
    variants = ["bridge"] + ([m.bridge for m in ABLATIONS if m.bridge in BRIDGES] if cfg.full else [])
    for variant in variants:
        log.stage(f"stage 1: {variant}")
        run = _bridge_dir(out, variant)
        if not (run / "bridge" / "bridge.json").exists():
            s1 = load_config(Stage1Config, None, [f"{k}={v}" for k, v in BRIDGES[variant].items()])
            s1 = dataclasses.replace(s1, data=DataConfig(images=cfg.bridge_images),
                                     train=TrainConfig(steps=cfg.bridge_steps, batch=32, checkpoint_every=100))
            timed(f"stage 1 {variant}", lambda: train_bridge(s1, run))
    log.stage("stage 1: held-out Bridge evaluation")
    bridge_rows = evaluate_runs([_bridge_dir(out, v) for v in variants], "shapes-teacher", "shapes-student-base",
                                images=min(360, len(prompts) * 4))

    for m in methods:
        log.stage(f"stage 2: {m.label}")
        run, student = out / "runs" / m.slug, out / "students" / m.slug
        if not (student / "model_index.json").exists():
            bridge = m.bridge if m.bridge in ("identity", "roundtrip") else str(_bridge_dir(out, m.bridge) / "bridge")
            s2 = Stage2Config(teacher=m.teacher, bridge=bridge, guidance=m.guidance,
                              fake=FakeConfig(updates=m.fake_updates),
                              train=TrainConfig(steps=cfg.distill_steps, batch=16, checkpoint_every=50))
            timed(f"stage 2 {m.slug}", lambda: distill(s2, run, prompts))
            student.parent.mkdir(parents=True, exist_ok=True)
            os.replace(run / "student", student)
        folder = out / "generations" / m.slug
        if not (folder / "manifest.jsonl").exists():
            gen(str(student), folder, 90)
        rows[m.label] = evaluate(folder)
        models[m.label] = str(student)
    console().print(table(rows))

    log.stage("latency (same process, batch 1 and 8)")
    latency_path = out / "latency.json"
    if latency_path.exists() and set(json.loads(latency_path.read_text())) == set(models):
        latency = json.loads(latency_path.read_text())
    else:
        latency = bench(models, (1, 8), cfg.bench_repeats, reference="Teacher (multi-step)")
        latency_path.write_text(json.dumps(latency, indent=1))
    console().print(bench_table(latency))

    metrics = {"generations": rows, "bridge": bridge_rows, "latency": latency,
               "wall_time_s": round(time.time() - t0, 1), "resumed": resumed, "stage_time_s": timings,
               "n_per_prompt": cfg.n_per_prompt, "prompts": len(prompts),
               "histories": _histories(out, methods, variants),
               "config": dict(to_dict(cfg), methods=[dataclasses.asdict(m) for m in methods])}
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1, default=str))
    tmp.replace(out / "metrics.json")
    write_report(out, metrics)
    log(f"done in {metrics['wall_time_s']} s" + (" (resumed: this invocation only)" if resumed else ""))
    print(f"\nwrote {out / 'metrics.json'} and {out / 'report.html'} ({metrics['wall_time_s']} s)")
    return metrics


def _histories(out: Path, methods: list[Method], variants: list[str]) -> dict[str, str]:
    """Where each training run's history.jsonl lies (the report plots them)."""
    h = {f"stage 1: {v}": str(_bridge_dir(out, v) / "history.jsonl") for v in variants}
    h.update({f"stage 2: {m.label}": str(out / "runs" / m.slug / "history.jsonl") for m in methods})
    return {k: v for k, v in h.items() if Path(v).exists()}
