"""Training commands: `bridge train | bank | eval`, `distill`, `demo`, `config keys | list`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import CrossdistillError
from ..ui import console
from .options import DRY_RUN, MAX_IMAGES, OVERWRITE, SET, THREADS, checked, main_process, run_stage, threads

bridge_app = typer.Typer(no_args_is_help=True, help="Stage 1: train and evaluate the Bridge.")
config_app = typer.Typer(no_args_is_help=True, help="The shipped configs and every config key.")

CONFIG_ARG = "a shipped config's name (`crossdistill config list`) or a YAML file"


@bridge_app.command("train")
def bridge_train(config: Optional[str] = typer.Argument(None, help=CONFIG_ARG + " (e.g. bridge_shapes)"),
                 out: Path = typer.Option(Path("runs/bridge"), help="run folder; rerun to resume"),
                 set_: Optional[List[str]] = SET, dry_run: bool = DRY_RUN, overwrite: bool = OVERWRITE,
                 threads_: int = THREADS) -> None:
    """Train a Bridge projector (latent reconstruction + attention fidelity)."""
    from ..bridge.stage1 import BridgeTrainConfig, train_bridge

    if run_stage(BridgeTrainConfig, config, set_, dry_run, threads_, train_bridge, out, overwrite) and main_process():
        print(f"bridge written to {out / 'bridge'}")


@bridge_app.command("bank")
def bridge_bank(config: Optional[str] = typer.Argument(None, help="the stage-1 config `bridge train` will use"),
                out: Path = typer.Option(Path("runs/bridge"), help="the run folder `bridge train` will use"),
                set_: Optional[List[str]] = SET, overwrite: bool = OVERWRITE, threads_: int = THREADS) -> None:
    """Stage 1's data step alone: sample (or read) and encode the bank into OUT/bank.

    Launched on N processes, each writes its own shards; rerun to finish an interrupted
    bank. `bridge train` with the same config and --out then starts from it."""
    from ..bridge.stage1 import BridgeTrainConfig, prepare_bank
    from ..config import load_config

    cfg = load_config(BridgeTrainConfig, config, set_ or [])
    threads(threads_)
    bank = prepare_bank(cfg, out, overwrite=overwrite)
    if main_process():
        print(f"bank of {len(bank)} pairs ({bank.shards} shards) in {out / 'bank'}")


@bridge_app.command("eval")
def bridge_eval(runs: List[Path] = typer.Argument(None, help="stage-1 run folders (or their bridge/ folders)"),
                teacher: str = typer.Option(..., help="the Teacher: a model name, folder or hub id"),
                student: str = typer.Option(..., help="the Student: a model name, folder or hub id"),
                roundtrip: bool = typer.Option(True, help="add the round-trip baseline row"),
                images: int = checked(540, help="held-out images", ge=1, le=MAX_IMAGES),
                domain: Optional[str] = typer.Option(None, help="held-out renders of this domain (default: the "
                                                     "Teacher's)"),
                out: Optional[Path] = typer.Option(None, help="write the table as JSON here"),
                threads_: int = THREADS) -> None:
    """Evaluate Bridges on held-out renders; one table, round-trip baseline included."""
    import json

    from ..bridge.evaluate import evaluate_runs, table

    threads(threads_)
    rows = evaluate_runs(list(runs or []), teacher, student, images, roundtrip, domain)
    console().print(table(rows))
    if out:
        out.write_text(json.dumps(rows, indent=1))


@config_app.command("list")
def config_list() -> None:
    """The configs shipped with the library and its domains, by name."""
    from ..config import named_configs

    for name, path in named_configs().items():
        print(f"{name:32s} {path}")


@config_app.command("keys")
def config_keys_cmd(what: str = typer.Argument(..., help="bridge | distill, or a config (its values shown)")) -> None:
    """Every config key with its type, default (or the config's value) and one line of help."""
    from rich.markup import escape
    from rich.table import Table

    from ..config import config_keys

    cls, cfg = _stage_of(what)
    t = Table(title=f"{cls.__name__} keys (override any with --set key=value)")
    for c in ("key", "type", "value" if cfg is not None else "default", "help"):
        t.add_column(c, overflow="fold")
    for key, tp, value, help_ in config_keys(cls, values=cfg):
        t.add_row(*map(escape, (key, tp, repr(value) if isinstance(value, str) else str(value), help_)))
    console().print(t)


def _stage_of(what: str):
    """(config class, None) for a stage's name; (its class, the config) for a config name or
    file (the one stage it loads as)."""
    from ..bridge.stage1 import BridgeTrainConfig
    from ..config import find_config, load_config
    from ..distill import DistillConfig

    classes = {"bridge": BridgeTrainConfig, "distill": DistillConfig}
    if what in classes:
        return classes[what], None
    try:
        path = find_config(what)
    except CrossdistillError:
        raise CrossdistillError(f"give a stage ({', '.join(classes)}), a shipped config (`crossdistill config "
                                f"list`) or a YAML file, got {what!r}") from None
    fits, last = {}, None
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


def distill_cmd(config: Optional[str] = typer.Argument(None, help=CONFIG_ARG + " (e.g. distill_shapes)"),
                out: Path = typer.Option(Path("runs/distill"), help="run folder; rerun to resume"),
                set_: Optional[List[str]] = SET, dry_run: bool = DRY_RUN, overwrite: bool = OVERWRITE,
                threads_: int = THREADS) -> None:
    """Stage 2: distill a one-step (or few-step) Student (DMD2 through the Bridge); exports OUT/student."""
    import json

    from ..distill import DistillConfig, distill

    if run_stage(DistillConfig, config, set_, dry_run, threads_, distill, out, overwrite) and main_process():
        steps = json.loads((out / "student" / "crossdistill.json").read_text())["defaults"]["steps"]
        print(f"{'one' if steps == 1 else steps}-step Student exported to {out / 'student'}")


def demo(out: Optional[Path] = typer.Option(None, help="demo folder; rerun to resume (default: runs/demo, "
                                                       "runs/demo-<domain> for another domain)"),
         domain: str = typer.Option("shapes", help="the domain: shapes (world I) or pairs (world II, two objects)"),
         full: bool = typer.Option(False, help="also the rows without the manifold term, the round-trip / "
                                                "projector-only / no-attention-fidelity ablations, the 2- and "
                                                "4-step and LoRA Students, the Students from the domain's "
                                                "further Teachers (each alone, all at once), 8 images per prompt"),
         n_per_prompt: Optional[int] = checked(None, help="images per prompt per model (default 4; --full 8)",
                                               ge=1, le=1000),
         n_prompts: Optional[int] = checked(None, help="use the first N of the domain's evaluation prompts "
                                            "(default: all; shapes 90, pairs 120)", ge=1, le=MAX_IMAGES),
         bridge_steps: int = checked(300, help="stage-1 steps", ge=1, le=10**7),
         bridge_images: int = checked(2000, help="images whose latents stage 1 trains on", ge=1, le=MAX_IMAGES),
         distill_steps: int = checked(300, help="stage-2 generator steps per Student", ge=1, le=10**7),
         train_seeds: int = checked(1, help="stage-2 training seeds per Student, --full: the ablations' too "
                                    "(3 or more: means with 95-percent intervals)", ge=1, le=100),
         bridge_seeds: bool = typer.Option(False, help="with --train-seeds: retrain every Bridge per seed too "
                                                       "(stage-1 intervals; each seed's Students use its Bridges)"),
         bench_repeats: int = checked(3, help="timed runs per model and batch size in the latency table, best "
                                      "kept", ge=1, le=1000),
         threads_: int = THREADS) -> None:
    """The method end to end on a domain: Bridge, both one-step Students, evaluation, latency, report.html."""
    from ..demo import DemoConfig, run_demo
    from ..domains import get

    total = len(get(domain).eval_prompts())
    if n_prompts is not None and not 1 <= n_prompts <= total:
        raise CrossdistillError(f"--n-prompts must be in 1..{total} for domain {domain}, got {n_prompts}")
    out = out or DemoConfig.default_out(domain)
    run_demo(DemoConfig(out, domain, full, n_per_prompt, prompts=n_prompts, bridge_steps=bridge_steps,
                        bridge_images=bridge_images, distill_steps=distill_steps, train_seeds=train_seeds,
                        bridge_seeds=bridge_seeds, bench_repeats=bench_repeats, threads=threads_))


def register(app: typer.Typer) -> None:
    app.add_typer(bridge_app, name="bridge")
    app.add_typer(config_app, name="config")
    app.command("distill")(distill_cmd)
    app.command("demo")(demo)
