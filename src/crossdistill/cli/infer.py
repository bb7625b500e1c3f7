"""Inference commands: `generate`, `eval`, `bench`, `app`, `convert-inception`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import CrossdistillError
from ..ui import console
from .options import (BATCH_SIZE, DEVICE, DTYPE, GUIDANCE, HEIGHT, MAX_BATCH, N_PER_PROMPT, PROMPTS_FILE, SIZE,
                      SEED, STEPS, THREADS, WIDTH, checked, generation_config, threads)


def generate(model: str = typer.Option(..., help="a model name (`crossdistill presets`), diffusers folder or hub id"),
             prompt: Optional[List[str]] = typer.Option(None, help="a prompt (repeatable)"),
             prompts_file: Optional[Path] = PROMPTS_FILE,
             out: Path = typer.Option(..., help="output folder"),
             steps: Optional[int] = STEPS, guidance: Optional[float] = GUIDANCE,
             n_per_prompt: int = N_PER_PROMPT, seed: int = SEED, batch_size: int = BATCH_SIZE,
             height: Optional[int] = HEIGHT, width: Optional[int] = WIDTH,
             device: str = DEVICE, dtype: str = DTYPE,
             overwrite: bool = typer.Option(False, help="replace an existing non-crossdistill folder"),
             threads_: int = THREADS) -> None:
    """Generate PNGs plus manifest.jsonl with any model the project knows."""
    from ..data.sources import read_prompt_file
    from ..generate import generate as run

    threads(threads_)
    prompts = list(prompt or []) + (read_prompt_file(prompts_file) if prompts_file else [])
    run(generation_config(model, prompts, out, steps, guidance, n_per_prompt, seed, batch_size, height, width,
                          device, dtype, overwrite))
    print(f"wrote {len(prompts) * n_per_prompt} images to {out}")


def evaluate(folders: Optional[List[Path]] = typer.Argument(None, help="generation folder(s) with manifest.jsonl"),
             metrics: Optional[str] = typer.Option(None, help="comma list of domain, fid, clip, hpsv2, imagereward, "
                                                   "hpsv3 (default: domain; fid,clip with --reference)"),
             reference: Optional[Path] = typer.Option(None, help="real images for FID (a folder, searched recursively)"),
             features: Optional[str] = typer.Option(None, help="FID feature network: the FID Inception-v3 as a "
                                                    ".safetensors file (see convert-inception), or a transformers "
                                                    "vision model folder (default: --clip-model's image tower)"),
             clip_model: str = typer.Option("openai/clip-vit-large-patch14", help="CLIP model folder or cached hub id"),
             model: Optional[str] = typer.Option(None, help="generate with this model first (--prompts-file, --out)"),
             prompts_file: Optional[Path] = PROMPTS_FILE,
             out: Optional[Path] = typer.Option(None, help="with --model: where the generations go"),
             n_per_prompt: int = N_PER_PROMPT, seed: int = SEED,
             steps: Optional[int] = STEPS, guidance: Optional[float] = GUIDANCE, batch_size: int = BATCH_SIZE,
             height: Optional[int] = HEIGHT, width: Optional[int] = WIDTH,
             device: str = DEVICE, dtype: str = DTYPE,
             classifier: Optional[str] = typer.Option(None, help="feature network of the domain FID "
                                                      "(default: the domain's own, e.g. shapes-classifier)"),
             threads_: int = THREADS) -> None:
    """Score generations (a domain's models: adherence, clean images, domain FID; real models:
    FID, CLIP score, HPSv2 / ImageReward / HPSv3); writes DIR/metrics.json. With --model, the
    generation options are `generate`'s."""
    from ..data.sources import read_prompt_file
    from ..eval.harness import evaluate as run, table
    from ..eval.scale import ScaleConfig, parse_metrics
    from ..generate import generate as gen

    threads(threads_)
    wanted = parse_metrics(metrics or ("fid,clip" if reference else "domain"))
    folders = list(folders or [])
    if model is not None:
        if prompts_file is None or out is None:
            raise CrossdistillError("--model needs --prompts-file and --out (where the generations go)")
        gen(generation_config(model, read_prompt_file(prompts_file), out, steps, guidance, n_per_prompt, seed,
                              batch_size, height, width, device, dtype))
        folders.insert(0, out)
    if not folders:
        raise CrossdistillError("nothing to evaluate: give generation folder(s), or --model with --prompts-file and --out")
    scale = ScaleConfig(tuple(wanted), reference, features, clip_model)
    rows = {str(f): run(f, classifier, metrics=wanted, scale=scale) for f in folders}
    console().print(table(rows))


def convert_inception(src: Path = typer.Argument(..., help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth"),
                      dst: Path = typer.Argument(..., help="where the .safetensors file goes")) -> None:
    """Convert the FID Inception-v3 weights (a plain state dict) to safetensors, once."""
    from ..eval.inception import convert

    if dst.suffix != ".safetensors":
        raise CrossdistillError(f"the output must end in .safetensors, got {dst}")
    n = convert(src, dst)
    print(f"wrote {n} tensors to {dst}; use it with `crossdistill eval ... --features {dst}`")


def app_cmd(model: str = typer.Option(..., help="the one-step Student: an exported folder, name or hub id"),
            teacher: Optional[str] = typer.Option(None, help="the Teacher drawn on request (default: the one the "
                                                  "Student was distilled from; 'none': no Teacher)"),
            host: str = checked("127.0.0.1", help="interface to listen on (0.0.0.0: every one)", nonempty=True),
            port: int = checked(7860, help="port (0: any free one)", ge=0, le=65535),
            device: str = DEVICE, dtype: str = DTYPE, threads_: int = THREADS) -> None:
    """Serve a web page that draws the typed prompt with the Student as you type."""
    from ..app import default_teacher, serve

    threads(threads_)
    teacher = default_teacher(model) if teacher is None else (None if teacher.lower() == "none" else teacher)
    serve(model, teacher, host, port, device, dtype,
          ready=lambda url: print(f"serving {model} on {url} (Ctrl-C to stop)", flush=True))


def _default_bench_models(domain: str) -> dict[str, str]:
    """No --model: a domain's Teacher against the demo's one-step Students, if present
    (else its Student base)."""
    from ..demo import DemoConfig
    from ..domains import get

    dom = get(domain)
    models = {"teacher": dom.teacher}
    students = DemoConfig.default_out(domain) / "students"
    for name in ("cross-space", "shared-space"):
        if (students / name / "model_index.json").is_file():
            models[name] = str(students / name)
    if len(models) == 1:
        models["student-base"] = dom.student
    return models


def bench(model: Optional[List[str]] = typer.Option(None, "--model",
                                                    help="LABEL=MODEL (name, folder or hub id); repeatable "
                                                         "(default: --domain's Teacher and its demo's Students)"),
          domain: str = typer.Option("shapes", help="without --model: whose Teacher and demo Students (the demo's "
                                                    "default folder)"),
          reference: Optional[str] = typer.Option(None, help="label the speed-up is relative to (default: the first)"),
          batch_size: List[int] = checked([1, 8], help="batch sizes (repeatable)", ge=1, le=MAX_BATCH),
          repeats: Optional[int] = checked(None, help="timed runs, best kept (default 3; --full-size 1)", ge=1, le=1000),
          height: Optional[int] = checked(None, help="image height (each model's default)", **SIZE),
          width: Optional[int] = checked(None, help="image width (each model's default)", **SIZE),
          device: str = DEVICE, dtype: str = DTYPE,
          full_size: bool = typer.Option(False, help="SD 1.5-512 one step vs a full-size Teacher's default sampler "
                                         "(random weights, batch 1; CPU: per-block timing)"),
          student_preset: str = typer.Option("sd15", help="with --full-size"),
          teacher_preset: str = typer.Option("sd35-large", help="with --full-size: sd35-large, flux-dev, ..."),
          narrow: Optional[int] = checked(None, hidden=True, help="divide every width (tests)", ge=1, le=1024),
          threads_: int = THREADS,
          out: Optional[Path] = typer.Option(None, help="also write the figures here (JSON)")) -> None:
    """Latency: ms per image (denoiser calls + decode) of each model's own sampler, and the speed-up."""
    import json

    from ..eval.bench import bench as run_bench, full_size as run_full, full_size_summary, table
    from ..runtime import pick_device, pick_dtype

    if repeats is not None and repeats < 1:
        raise CrossdistillError(f"--repeats must be >= 1, got {repeats}")
    dev = pick_device(device)
    if full_size:
        if model:
            raise CrossdistillError("--full-size times presets (--student-preset, --teacher-preset), not --model")
        threads(threads_)
        row = run_full(student_preset, teacher_preset, device=str(dev), repeats=repeats or 1, narrow_k=narrow,
                       dtype=None if dtype == "auto" else pick_dtype(dtype, dev),
                       progress=lambda msg: console().print(f"[dim]{msg}[/dim]"))
        console().print(full_size_summary(row))
        if out:
            out.write_text(json.dumps(row, indent=1))
        return
    models = {}
    for spec in model or []:
        label, sep, source = spec.partition("=")
        if not sep or not label or not source:
            raise CrossdistillError(f"--model must be LABEL=MODEL, got {spec!r}")
        models[label] = source
    models = models or _default_bench_models(domain)
    if any(b < 1 for b in batch_size):
        raise CrossdistillError(f"batch sizes must be >= 1, got {batch_size}")
    ref = reference or next(iter(models))
    if ref not in models:
        raise CrossdistillError(f"--reference {ref!r} is not one of the labels: {', '.join(models)}")
    threads(threads_)
    rows = run_bench(models, tuple(batch_size), repeats or 3, reference=ref, device=dev,
                     dtype=pick_dtype(dtype, dev), height=height, width=width)
    console().print(table(rows, tuple(batch_size)))
    if out:
        out.write_text(json.dumps(rows, indent=1))


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("eval")(evaluate)
    app.command("bench")(bench)
    app.command("app")(app_cmd)
    app.command("convert-inception")(convert_inception)
