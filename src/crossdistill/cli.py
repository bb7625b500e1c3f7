"""The `crossdistill` command: a thin layer over the library.

User errors (`CrossdistillError`) print one line and exit 2; nothing else is caught.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import CrossdistillError
from .ui import console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="One-step text-to-image Students from Teachers in a different latent space.")
bridge_app = typer.Typer(no_args_is_help=True, help="Stage 1: train and evaluate the Bridge.")
app.add_typer(bridge_app, name="bridge")


def _stage_config(cls, config, overrides, dry_run: bool, threads: int, train, out: Path,
                  overwrite: bool = False) -> bool:
    """Resolve a stage's typed config from YAML + --set; print it (--dry-run) or train."""
    import yaml

    from .config import load_config, to_dict

    cfg = load_config(cls, config, overrides or [])
    if dry_run:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return False
    _threads(threads)
    from .train.loop import check_run_dir

    check_run_dir(out, overwrite)   # before any model is loaded
    train(cfg, out, overwrite=overwrite)
    return True


def _main_process() -> bool:
    """False in the non-zero ranks of an `accelerate launch` (they print nothing)."""
    return os.environ.get("RANK", "0") == "0"


def _threads(n: int) -> None:
    from .runtime import set_threads

    set_threads(n)


THREADS_HELP = "torch CPU threads (0: torch's default, the machine's cores)"


def _threads_option():
    return typer.Option(0, help=THREADS_HELP)


def _device_options():
    return (typer.Option("auto", help="auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps"),
            typer.Option("auto", help="auto (fp16 on a GPU, fp32 on the CPU) | fp32 | fp16 | bf16"))


PRESET_KINDS = {"full": "architecture only: no weights (bench --full-size, tests); load real weights by hub id",
                "tiny": "random-weight test size (tests)"}


@app.command()
def presets() -> None:
    """List the model presets: full-size architectures (no weights), tiny test sizes, and the
    domains' trained models (the only presets `--model` accepts by name)."""
    from .artifacts import resolve
    from .presets import load_preset, preset_names

    print(f"{'preset':22s} {'family':6s} {'kind':6s} what it is")
    for name, path in preset_names().items():
        p = load_preset(name)
        kind = path.parent.name
        what = PRESET_KINDS.get(kind) or ("trained model shipped with the project: --model " + name
                                          if resolve(name) != name else "a domain's architecture (weights not installed)")
        src = f" (weights: {p['source']})" if p.get("source") else ""
        print(f"{name:22s} {p['family']:6s} {kind:6s} {what}{src}")


def _domain_app(name: str) -> typer.Typer:
    """`crossdistill <domain> export|pretrain` for one registered domain."""
    sub = typer.Typer(no_args_is_help=True, help=f"The {name} domain: data, pretraining of its models.")

    @sub.command("export")
    def export_cmd(n: int = typer.Option(..., "--n", help="number of scenes"),
                   size: int = typer.Option(64, help="64 or 32 (the 64 px render 2x2-averaged)"),
                   out: Path = typer.Option(..., help="output folder (PNGs + manifest.jsonl)"),
                   seed: int = typer.Option(0, help="scene i of a seed is always the same")) -> None:
        """Export N scenes as PNGs plus manifest.jsonl (prompt and scene parameters)."""
        from .domains import get
        from .domains.data import export

        dom = get(name)
        if size not in (dom.size, dom.size // 2):
            raise CrossdistillError(f"--size must be {dom.size} or {dom.size // 2}, got {size}")
        if n < 1:
            raise CrossdistillError(f"--n must be >= 1, got {n}")
        export(dom, n, size, out, seed)
        print(f"wrote {n} scenes to {out}")

    @sub.command("pretrain")
    def pretrain_cmd(out: Path = typer.Option(Path(f"runs/pretrain-{name}"), help="run folder (stages resume here)"),
                     stage: Optional[List[str]] = typer.Option(None, help="stage(s) to run; default all"),
                     seed: int = typer.Option(0),
                     threads: int = _threads_option(),
                     quick: bool = typer.Option(False, help="tiny budgets for a smoke test (useless models)"),
                     install: bool = typer.Option(False, help="copy finished models into the domain's "
                                                  "named artifacts")) -> None:
        """Train the domain's VAEs, Teacher, Student base and classifier from a seed (rerun to resume)."""
        import dataclasses

        from .domains import get
        from .domains.pretrain import PretrainConfig, install_artifacts, pretrain

        dom = get(name)
        cfg = PretrainConfig.quick(seed) if quick else dataclasses.replace(dom.pretrain_config(), seed=seed)
        pretrain(dom, out, stage or None, cfg, threads=threads)
        if install:
            install_artifacts(dom, out)

    return sub


def _add_domain_apps() -> None:
    from .domains import names

    taken = {c.name or c.callback.__name__ for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for name in names():
        if name in taken:   # a plug-in may not shadow a command
            print(f"warning: domain {name!r} has the name of a crossdistill command; its export / pretrain "
                  f"commands are not added", file=sys.stderr)
            continue
        app.add_typer(_domain_app(name), name=name)


_add_domain_apps()


@app.command()
def generate(model: str = typer.Option(..., help="model name (shapes-teacher, ...) or diffusers folder / hub id"),
             prompt: Optional[List[str]] = typer.Option(None, help="a prompt (repeatable)"),
             prompts_file: Optional[Path] = typer.Option(None, help="prompts, one per line"),
             out: Path = typer.Option(..., help="output folder"),
             steps: Optional[int] = typer.Option(None, help="sampling steps (model default)"),
             guidance: Optional[float] = typer.Option(None, help="CFG scale (model default)"),
             n_per_prompt: int = typer.Option(1, help="images per prompt"),
             seed: int = typer.Option(0, help="image k uses seed + k"),
             batch_size: int = typer.Option(16, help="images per forward pass"),
             height: Optional[int] = typer.Option(None, help="image height in pixels (model default)"),
             width: Optional[int] = typer.Option(None, help="image width in pixels (model default)"),
             device: str = _device_options()[0],
             dtype: str = _device_options()[1],
             overwrite: bool = typer.Option(False, help="replace an existing non-crossdistill folder"),
             threads: int = _threads_option()) -> None:
    """Generate PNGs plus manifest.jsonl with any model the project knows."""
    from .data.sources import read_prompt_file as read_prompts
    from .generate import GenerateConfig, generate as run

    _threads(threads)
    prompts = list(prompt or []) + (read_prompts(prompts_file) if prompts_file else [])
    if not prompts:
        raise CrossdistillError("no prompts given (use --prompt or --prompts-file)")
    if batch_size < 1:
        raise CrossdistillError(f"--batch-size must be >= 1, got {batch_size}")
    run(GenerateConfig(model, prompts, out, steps, guidance, n_per_prompt, seed, batch_size, height, width,
                       overwrite=overwrite, device=device, dtype=dtype))
    print(f"wrote {len(prompts) * n_per_prompt} images to {out}")


@app.command("eval")
def evaluate(folders: Optional[List[Path]] = typer.Argument(None, help="generation folder(s) with manifest.jsonl"),
             metrics: Optional[str] = typer.Option(None, help="comma list of domain, fid, clip, hpsv2, imagereward, "
                                                   "hpsv3 (default: domain; fid,clip with --reference)"),
             reference: Optional[Path] = typer.Option(None, help="real images for FID (a folder, searched recursively)"),
             features: Optional[str] = typer.Option(None, help="FID feature network: the FID Inception-v3 as a "
                                                    ".safetensors file (see convert-inception), or a transformers "
                                                    "vision model folder (default: --clip-model's image tower)"),
             clip_model: str = typer.Option("openai/clip-vit-large-patch14", help="CLIP model folder or cached hub id"),
             model: Optional[str] = typer.Option(None, help="generate with this model first (--prompts-file, --out)"),
             prompts_file: Optional[Path] = typer.Option(None, help="with --model: prompts, one per line"),
             out: Optional[Path] = typer.Option(None, help="with --model: where the generations go"),
             n_per_prompt: int = typer.Option(1, help="with --model"),
             seed: int = typer.Option(0, help="with --model: image k uses seed + k"),
             steps: Optional[int] = typer.Option(None, help="with --model: sampling steps (model default)"),
             guidance: Optional[float] = typer.Option(None, help="with --model: CFG scale (model default)"),
             batch_size: int = typer.Option(16, help="with --model: images per forward pass"),
             height: Optional[int] = typer.Option(None, help="with --model: image height (model default)"),
             width: Optional[int] = typer.Option(None, help="with --model: image width (model default)"),
             device: str = _device_options()[0],
             dtype: str = _device_options()[1],
             classifier: Optional[str] = typer.Option(None, help="feature network of the domain FID "
                                                      "(default: the domain's own, e.g. shapes-classifier)"),
             threads: int = _threads_option()) -> None:
    """Score generations (a domain's models: adherence, clean images, domain FID; real models:
    FID, CLIP score, HPSv2 / ImageReward / HPSv3); writes DIR/metrics.json."""
    from .eval.harness import evaluate as run, table
    from .eval.scale import ScaleConfig, parse_metrics
    from .data.sources import read_prompt_file as read_prompts
    from .generate import GenerateConfig, generate as gen

    _threads(threads)
    wanted = parse_metrics(metrics or ("fid,clip" if reference else "domain"))
    folders = list(folders or [])
    if model is not None:
        if prompts_file is None or out is None:
            raise CrossdistillError("--model needs --prompts-file and --out (where the generations go)")
        gen(GenerateConfig(model, read_prompts(prompts_file), out, steps, guidance, n_per_prompt, seed, batch_size,
                           height, width, device=device, dtype=dtype))
        folders.insert(0, out)
    if not folders:
        raise CrossdistillError("nothing to evaluate: give generation folder(s), or --model with --prompts-file and --out")
    scale = ScaleConfig(tuple(wanted), reference, features, clip_model)
    rows = {str(f): run(f, classifier, metrics=wanted, scale=scale) for f in folders}
    console().print(table(rows))


@app.command("convert-inception")
def convert_inception(src: Path = typer.Argument(..., help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth"),
                      dst: Path = typer.Argument(..., help="where the .safetensors file goes")) -> None:
    """Convert the FID Inception-v3 weights (a plain state dict) to safetensors, once."""
    from .eval.inception import convert

    if dst.suffix != ".safetensors":
        raise CrossdistillError(f"the output must end in .safetensors, got {dst}")
    n = convert(src, dst)
    print(f"wrote {n} tensors to {dst}; use it with `crossdistill eval ... --features {dst}`")


@bridge_app.command("train")
def bridge_train(config: Optional[Path] = typer.Argument(None, help="YAML config (configs/bridge_shapes.yaml)"),
                 out: Path = typer.Option(Path("runs/bridge"), help="run folder; rerun to resume"),
                 set_: Optional[List[str]] = typer.Option(None, "--set", help="override, e.g. train.steps=100"),
                 dry_run: bool = typer.Option(False, help="print the resolved config and exit"),
                 overwrite: bool = typer.Option(False, help="train into an existing folder that is not a run"),
                 threads: int = _threads_option()) -> None:
    """Train a Bridge projector (latent reconstruction + attention fidelity)."""
    from .bridge.stage1 import Stage1Config, train_bridge

    if _stage_config(Stage1Config, config, set_, dry_run, threads, train_bridge, out, overwrite) and _main_process():
        print(f"bridge written to {out / 'bridge'}")


@bridge_app.command("bank")
def bridge_bank(config: Optional[Path] = typer.Argument(None, help="the stage-1 YAML config `bridge train` will use"),
                out: Path = typer.Option(Path("runs/bridge"), help="the run folder `bridge train` will use"),
                set_: Optional[List[str]] = typer.Option(None, "--set", help="override, e.g. data.images=20000"),
                overwrite: bool = typer.Option(False, help="write into an existing folder that is not a run"),
                threads: int = _threads_option()) -> None:
    """Stage 1's data step alone: sample (or read) and encode the bank into OUT/bank.

    Launched on N processes, each writes its own shards; rerun to finish an interrupted
    bank. `bridge train` with the same config and --out then starts from it."""
    from .bridge.stage1 import Stage1Config, prepare_bank
    from .config import load_config

    cfg = load_config(Stage1Config, config, set_ or [])
    _threads(threads)
    bank = prepare_bank(cfg, out, overwrite=overwrite)
    if _main_process():
        print(f"bank of {len(bank)} pairs ({bank.shards} shards) in {out / 'bank'}")


@bridge_app.command("eval")
def bridge_eval(runs: List[Path] = typer.Argument(None, help="stage-1 run folders (or their bridge/ folders)"),
                roundtrip: bool = typer.Option(True, help="add the round-trip baseline row"),
                images: int = typer.Option(540, help="held-out images"),
                teacher: str = typer.Option("shapes-teacher", help="model name or folder"),
                student: str = typer.Option("shapes-student-base", help="model name or folder"),
                domain: Optional[str] = typer.Option(None, help="held-out renders of this domain (default: the "
                                                     "Teacher's)"),
                out: Optional[Path] = typer.Option(None, help="write the table as JSON here"),
                threads: int = _threads_option()) -> None:
    """Evaluate Bridges on held-out renders; one table, round-trip baseline included."""
    import json

    from .bridge.evaluate import evaluate_runs, table

    _threads(threads)
    rows = evaluate_runs(list(runs or []), teacher, student, images, roundtrip, domain)
    console().print(table(rows))
    if out:
        out.write_text(json.dumps(rows, indent=1))


config_app = typer.Typer(no_args_is_help=True, help="Inspect the stages' configs.")
app.add_typer(config_app, name="config")

CONFIG_STAGES = {"bridge": ("crossdistill.bridge.stage1", "Stage1Config"),
                 "distill": ("crossdistill.distill.stage2", "Stage2Config")}


def _stage_of(what: str):
    """A stage name, or a YAML file (the stage whose config it loads as)."""
    import importlib

    from .config import load_config

    classes = {k: getattr(importlib.import_module(m), c) for k, (m, c) in CONFIG_STAGES.items()}
    if what in classes:
        return classes[what], None
    path = Path(what)
    if not path.is_file():
        raise CrossdistillError(f"give a stage ({', '.join(classes)}) or a YAML config file, got {what!r}")
    fits = {}
    for k, cls in classes.items():
        try:
            fits[k] = load_config(cls, path)
        except CrossdistillError as e:
            last = e
    if len(fits) != 1:
        raise CrossdistillError(f"{path} is not a config of exactly one stage ({', '.join(classes)}): " +
                                ("it loads as both" if fits else f"{last}"))
    (k, cfg), = fits.items()
    return classes[k], cfg


@config_app.command("keys")
def config_keys_cmd(what: str = typer.Argument(..., help="bridge | distill, or a YAML config (its values shown)")) -> None:
    """Every config key with its type, default (or the file's value) and one line of help."""
    from rich.markup import escape
    from rich.table import Table

    from .config import config_keys

    cls, cfg = _stage_of(what)
    t = Table(title=f"{cls.__name__} keys (override any with --set key=value)")
    for c in ("key", "type", "value" if cfg is not None else "default", "help"):
        t.add_column(c, overflow="fold")
    for key, tp, value, help_ in config_keys(cls, values=cfg):
        t.add_row(*map(escape, (key, tp, repr(value) if isinstance(value, str) else str(value), help_)))
    console().print(t)


@app.command("distill")
def distill_cmd(config: Optional[Path] = typer.Argument(None, help="YAML config (configs/distill_shapes.yaml)"),
                out: Path = typer.Option(Path("runs/distill"), help="run folder; rerun to resume"),
                set_: Optional[List[str]] = typer.Option(None, "--set", help="override, e.g. train.steps=100"),
                dry_run: bool = typer.Option(False, help="print the resolved config and exit"),
                overwrite: bool = typer.Option(False, help="train into an existing folder that is not a run"),
                threads: int = _threads_option()) -> None:
    """Stage 2: distill a one-step (or few-step) Student (DMD2 through the Bridge); exports OUT/student."""
    import json

    from .distill.stage2 import Stage2Config, distill

    if _stage_config(Stage2Config, config, set_, dry_run, threads, distill, out, overwrite) and _main_process():
        steps = json.loads((out / "student" / "crossdistill.json").read_text())["defaults"]["steps"]
        print(f"{'one' if steps == 1 else steps}-step Student exported to {out / 'student'}")


@app.command("app")
def app_cmd(model: str = typer.Option(..., help="the one-step Student: an exported folder, name or hub id"),
            teacher: Optional[str] = typer.Option(None, help="the Teacher drawn on request (default: the one the "
                                                  "Student was distilled from; 'none': no Teacher)"),
            host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0: every one)"),
            port: int = typer.Option(7860, help="port (0: any free one)"),
            device: str = _device_options()[0],
            dtype: str = _device_options()[1],
            threads: int = _threads_option()) -> None:
    """Serve a web page that draws the typed prompt with the Student as you type."""
    from .app import default_teacher, serve

    _threads(threads)
    teacher = default_teacher(model) if teacher is None else (None if teacher.lower() == "none" else teacher)
    serve(model, teacher, host, port, device, dtype,
          ready=lambda url: print(f"serving {model} on {url} (Ctrl-C to stop)", flush=True))


@app.command()
def push(folder: Path = typer.Argument(..., help="an exported Student (RUN/student) or a Bridge (RUN/bridge)"),
         repo_id: str = typer.Argument(..., help="owner/name on the Hugging Face Hub (created if missing)"),
         private: bool = typer.Option(False, help="create the repo private"),
         message: Optional[str] = typer.Option(None, help="commit message"),
         revision: Optional[str] = typer.Option(None, help="branch to upload to (default: main)")) -> None:
    """Upload an exported Student or a Bridge, model card included, with huggingface_hub
    (log in first: `huggingface-cli login` or HF_TOKEN)."""
    from .hub import push as run

    print(f"uploaded {folder} to {run(folder, repo_id, private, message, revision)}")


@app.command()
def card(folder: Path = typer.Argument(..., help="an exported Student or a Bridge folder"),
         metrics: Optional[Path] = typer.Option(None, help="a metrics.json `crossdistill eval` wrote, "
                                                "recorded in the card")) -> None:
    """Re-render the model card (README.md) of a Student or Bridge, adding measured metrics."""
    import json

    from .hub import add_metrics, flat_metrics, write_card

    if metrics is not None:
        if not metrics.is_file():
            raise CrossdistillError(f"metrics file not found: {metrics}")
        add_metrics(folder, flat_metrics(json.loads(metrics.read_text())))
    print(f"wrote {write_card(folder)}")


@app.command()
def demo(out: Optional[Path] = typer.Option(None, help="demo folder; rerun to resume (default: runs/demo, "
                                                    "runs/demo-<domain> for another domain)"),
         domain: str = typer.Option("shapes", help="the domain: shapes (world I) or pairs (world II, two objects)"),
         full: bool = typer.Option(False, help="also the rows without the manifold term, the round-trip / "
                                                "projector-only / no-attention-fidelity ablations, the 2- and "
                                                "4-step and LoRA Students, the Students from the domain's "
                                                "further Teachers (each alone, all at once), 8 images per prompt"),
         n_per_prompt: Optional[int] = typer.Option(None, help="images per prompt per model (default 4; --full 8)"),
         n_prompts: Optional[int] = typer.Option(None, help="use the first N of the domain's evaluation prompts "
                                                 "(default: all; shapes 90, pairs 120)"),
         bridge_steps: int = typer.Option(300),
         bridge_images: int = typer.Option(2000, help="images whose latents stage 1 trains on"),
         distill_steps: int = typer.Option(300, help="stage-2 generator steps per Student"),
         train_seeds: int = typer.Option(1, help="stage-2 training seeds per Student, --full: the ablations' too "
                                                  "(3 or more: means with 95-percent intervals)"),
         bridge_seeds: bool = typer.Option(False, help="with --train-seeds: retrain every Bridge per seed too "
                                                       "(stage-1 intervals; each seed's Students use its Bridges)"),
         threads: int = _threads_option()) -> None:
    """The method end to end on a domain: Bridge, both one-step Students, evaluation, latency, report.html."""
    from .demo import DemoConfig, run_demo
    from .domains import get

    total = len(get(domain).eval_prompts())
    if n_prompts is not None and not 1 <= n_prompts <= total:
        raise CrossdistillError(f"--n-prompts must be in 1..{total} for domain {domain}, got {n_prompts}")
    for name, v in (("--n-per-prompt", n_per_prompt or 1), ("--bridge-steps", bridge_steps),
                    ("--bridge-images", bridge_images), ("--distill-steps", distill_steps),
                    ("--train-seeds", train_seeds), ("--threads", threads + 1)):
        if v < 1:
            raise CrossdistillError(f"{name} must be >= 1, got {v}")
    out = out or Path("runs/demo" if domain == "shapes" else f"runs/demo-{domain}")
    run_demo(DemoConfig(out, domain, full, n_per_prompt, prompts=n_prompts, bridge_steps=bridge_steps,
                        bridge_images=bridge_images, distill_steps=distill_steps, train_seeds=train_seeds,
                        bridge_seeds=bridge_seeds, threads=threads))


def _default_bench_models() -> dict[str, str]:
    """No --model: the shapes Teacher against the demo's one-step Students, if present."""
    models = {"teacher": "shapes-teacher"}
    students = Path("runs/demo/students")
    for name in ("cross-space", "shared-space"):
        if (students / name / "model_index.json").is_file():
            models[name] = str(students / name)
    if len(models) == 1:
        models["student-base"] = "shapes-student-base"
    return models


@app.command()
def bench(model: Optional[List[str]] = typer.Option(None, "--model",
                                                    help="LABEL=MODEL (name, folder or hub id); repeatable "
                                                         "(default: the shapes Teacher and runs/demo's Students)"),
          reference: Optional[str] = typer.Option(None, help="label the speed-up is relative to (default: the first)"),
          batch_size: List[int] = typer.Option([1, 8], help="batch sizes (repeatable)"),
          repeats: Optional[int] = typer.Option(None, help="timed runs, best kept (default 3; --full-size 1)"),
          height: Optional[int] = typer.Option(None, help="image height (each model's default)"),
          width: Optional[int] = typer.Option(None, help="image width (each model's default)"),
          device: str = _device_options()[0],
          dtype: str = _device_options()[1],
          full_size: bool = typer.Option(False, help="SD 1.5-512 one step vs a full-size Teacher's default sampler "
                                         "(random weights, batch 1; CPU: per-block timing)"),
          student_preset: str = typer.Option("sd15", help="with --full-size"),
          teacher_preset: str = typer.Option("sd35-large", help="with --full-size: sd35-large, flux-dev, ..."),
          narrow: Optional[int] = typer.Option(None, hidden=True, help="divide every width (tests)"),
          threads: int = _threads_option(),
          out: Optional[Path] = typer.Option(None, help="also write the figures here (JSON)")) -> None:
    """Latency: ms per image (denoiser calls + decode) of each model's own sampler, and the speed-up."""
    import json

    from .eval.bench import bench as run_bench, full_size as run_full, table
    from .runtime import pick_device, pick_dtype

    if repeats is not None and repeats < 1:
        raise CrossdistillError(f"--repeats must be >= 1, got {repeats}")
    dev = pick_device(device)
    if full_size:
        if model:
            raise CrossdistillError("--full-size times presets (--student-preset, --teacher-preset), not --model")
        _threads(threads)
        row = run_full(student_preset, teacher_preset, device=str(dev), repeats=repeats or 1, narrow_k=narrow,
                       dtype=None if dtype == "auto" else pick_dtype(dtype, dev),
                       progress=lambda msg: console().print(f"[dim]{msg}[/dim]"))
        console().print(f"{row['student']} @ {row['student_res']} one step: {row['student_ms']:.0f} ms "
                        f"(UNet {row['student_call_ms']:.0f} + decode {row['student_decode_ms']:.0f})\n"
                        f"{row['teacher']} @ {row['teacher_res']}, {row['teacher_steps']} steps: "
                        f"{row['teacher_ms']:.0f} ms ({row['teacher_steps']} calls x {row['teacher_call_ms']:.0f}, "
                        f"{row['teacher_call']}, + decode {row['teacher_decode_ms']:.0f})\n"
                        f"speed-up {row['speedup']:.1f}x on {row['device']} ({row['dtype']}, batch 1)")
        if out:
            out.write_text(json.dumps(row, indent=1))
        return
    repeats = repeats or 3
    models = {}
    for spec in model or []:
        label, sep, source = spec.partition("=")
        if not sep or not label or not source:
            raise CrossdistillError(f"--model must be LABEL=MODEL, got {spec!r}")
        models[label] = source
    models = models or _default_bench_models()
    if any(b < 1 for b in batch_size):
        raise CrossdistillError(f"batch sizes must be >= 1, got {batch_size}")
    ref = reference or next(iter(models))
    if ref not in models:
        raise CrossdistillError(f"--reference {ref!r} is not one of the labels: {', '.join(models)}")
    _threads(threads)
    rows = run_bench(models, tuple(batch_size), repeats, reference=ref, device=dev, dtype=pick_dtype(dtype, dev),
                     height=height, width=width)
    console().print(table(rows, tuple(batch_size)))
    if out:
        out.write_text(json.dumps(rows, indent=1))


def _quiet_library_bars() -> None:
    """Our own progress bars stay; the libraries' per-file loading bars go (one-line errors)."""
    try:
        import diffusers.utils.logging as dl
        import transformers.utils.logging as tl

        dl.disable_progress_bar()
        tl.disable_progress_bar()
        dl.set_verbosity_error()      # diffusers' warnings would precede our one-line error
    except Exception:
        pass


# flags an earlier release used, per command, and their names now (docs/cli.md: one name per concept)
RENAMED_FLAGS = {"demo": {"--prompts": "--n-prompts"},
                 "bench": {"--batch": "--batch-size", "--json": "--out"},
                 "generate": {"--batch": "--batch-size", "--n": "--n-per-prompt", "--prompts": "--prompts-file"},
                 "eval": {"--batch": "--batch-size", "--prompts": "--prompts-file"}}


def _check_renamed(args: list[str]) -> None:
    command = next((a for a in args if not a.startswith("-")), None)
    for a in args:
        new = RENAMED_FLAGS.get(command, {}).get(a.split("=", 1)[0])
        if new:
            raise CrossdistillError(f"{command} {a.split('=', 1)[0]} was renamed {new} (same meaning); "
                                    f"see `crossdistill {command} --help`")


def expand_set(args: list[str]) -> list[str]:
    """`--set a=1 b=2` -> `--set a=1 --set b=2`: the words after one --set that look like
    key=value (and are not options) are overrides too."""
    out, value_next, in_set = [], False, False
    for a in args:
        if value_next:                       # the value of a --set
            value_next, in_set = False, True
        elif a == "--set":
            value_next = True
        elif a.startswith("--set="):
            in_set = True
        elif in_set and not a.startswith("-") and "=" in a:
            out.append("--set")
        else:
            in_set = False
        out.append(a)
    return out


def main() -> None:
    args = expand_set(sys.argv[1:])
    sys.argv[1:] = args
    if args[:1] == ["--version"]:
        from . import __version__
        print(f"crossdistill {__version__}")
        return
    if args and not {"--help", "-h"} & set(args):   # help stays fast: no diffusers / transformers import
        _quiet_library_bars()
    try:
        _check_renamed(args)
        app()
    except CrossdistillError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
