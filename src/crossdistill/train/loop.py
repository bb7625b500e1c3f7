"""The training loop both stages share, on Hugging Face Accelerate.

A stage is a `Task`: it builds its models, names its trainable modules and
optimizers, performs one update per `step(step, generator)` and exports its result.
The loop owns everything else: the accelerator (set up here, in one place), resume
from the newest valid checkpoint (rerun the same command), per-step generators
derived from (seed, step) so a resumed run draws exactly what an uninterrupted one
would (every process draws the global batch's randomness and keeps its own slice,
`local_part`, so N processes train exactly as one process with the same global batch;
gradients are averaged across processes in `average_gradients`, or, for what
`train.parallel=fsdp` shards, by FSDP2: `parallel.py`), bf16/fp16 autocast
around every step, gradient checkpointing, non-finite-step skipping, a progress bar with live losses, tracker
scalars (train.report_to), periodic atomic checkpoints and the resolved config in the run folder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checks import SEED, THREADS, Checked, accepts, check_fields
from ..errors import CrossdistillError, choice_error
from .checkpoint import load_latest, save_checkpoint, save_sharded_checkpoint
from .parallel import PARALLEL, any_process, every_process, is_sharded, local, shard, uses_fsdp

PRECISIONS = ("no", "bf16", "fp16")
REPORT_TO = {"tensorboard": ("tensorboard",), "wandb": ("wandb",), "all": ("tensorboard", "wandb"), "none": ()}
MAX_STEPS, MAX_BATCH = 10**9, 2**20   # beyond any run; past them a library call fails
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def weights_dtype(name: str, cast_fp32: bool = True) -> torch.dtype | None:
    """The dtype frozen weights (Teacher, VAEs, text encoders) are held in (None for fp32
    with `cast_fp32=False`: load as stored, no cast)."""
    if name not in DTYPES:
        raise choice_error("weights_dtype", name, DTYPES)
    return None if name == "fp32" and not cast_fp32 else DTYPES[name]


def _no_accelerator() -> bool:
    return not (torch.cuda.is_available() or torch.backends.mps.is_available())


def processes():
    """This process's place among the launched ones (Accelerate's `PartialState`:
    `process_index`, `num_processes`, `wait_for_everyone`), usable before the accelerator."""
    from accelerate import PartialState

    return PartialState(cpu=_no_accelerator())


def default_device() -> torch.device:
    """This process's device under Accelerate (models are loaded straight onto it)."""
    return processes().device


@dataclass
class TrainConfig(Checked):
    KEY = "train."
    steps: int = accepts(1000, ge=1, le=MAX_STEPS)   # optimisation steps (a rerun continues to this count)
    batch: int = accepts(32, ge=1, le=MAX_BATCH)       # global batch (split across processes)
    seed: int = accepts(0, **SEED)   # noise, timesteps and data order of every step
    checkpoint_every: int = accepts(100, ge=1)   # steps between checkpoints (rerun the command to resume)
    keep_checkpoints: int = accepts(2, ge=1)     # newest checkpoints kept on disk
    log_every: int = accepts(10, ge=1)           # steps between history.jsonl / tracker rows
    sample_every: int = accepts(0, ge=0)   # sample grid (run_dir/samples/*.png + the trackers) every N steps; 0: off
    mixed_precision: str = accepts("no", choices=PRECISIONS)   # no | bf16 | fp16 (autocast; weights and optimizer
                                     # stay fp32)
    gradient_checkpointing: bool = False   # recompute activations in backward (less memory, ~30% slower)
    max_bad_steps: int = accepts(5, ge=1)        # consecutive non-finite steps before stopping
    threads: int = accepts(0, **THREADS)         # torch CPU threads (0: leave torch's default)
    parallel: str = accepts("ddp", choices=PARALLEL)   # ddp | fsdp (FSDP2 shards the Teacher side; see
                                     # train/parallel.py)
    max_grad_norm: float = accepts(0.0, ge=0)    # clip each optimizer's gradient norm to this (0: off; DMD2 uses 10)
    warmup_steps: int = accepts(0, ge=0)         # linear learning-rate warm-up from 0 over the first N steps
    adam_betas: tuple[float, float] = accepts((0.9, 0.999), ge=0, lt=1)   # AdamW's (beta1, beta2)
    weight_decay: float = accepts(0.0, ge=0)     # AdamW's decoupled weight decay
    report_to: str = accepts("tensorboard", choices=tuple(REPORT_TO))   # trackers through Accelerate: tensorboard |
                                     # wandb | all | none (wandb: pip install wandb; WANDB_MODE=offline needs no
                                     # network)
    grad_accumulation: int = accepts(1, ge=1)    # micro-batches per update: each process's part of the batch runs
                                     # in N chunks, gradients summed (the same update, 1/N of the activation memory)

    def validate(self) -> "TrainConfig":
        check_fields(self, self.KEY)   # again: a field may have been set since it was built
        trackers(self.report_to)   # the tracker's package is installed
        if len(self.adam_betas) != 2:
            raise CrossdistillError(f"train.adam_betas must be two numbers in [0, 1), got {list(self.adam_betas)}")
        return self

    def optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        """AdamW with this config's betas and weight decay (both stages, every optimizer)."""
        return torch.optim.AdamW(params, lr=lr, betas=tuple(self.adam_betas), weight_decay=self.weight_decay)


class Task:
    """What the loop drives: subclass it. The first five methods are required; the hooks
    below them have defaults."""

    name: str = "task"

    def setup(self, accelerator) -> None:
        """Build optimizers over the parameters as the loop left them (sharded or not)."""
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        """Trainable modules, by name: checkpointed and restored."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        """One optimisation step; returns the numbers to log."""
        raise NotImplementedError

    def export(self, run_dir: Path) -> None:
        """Write the run's product (a Bridge folder, a Student pipeline) under run_dir."""
        raise NotImplementedError

    def shard_targets(self) -> list[torch.nn.Module]:
        """Modules FSDP shards (train.parallel=fsdp); default: none (data-parallel only)."""
        return []

    def checkpointing_targets(self) -> list[torch.nn.Module]:
        """Modules whose blocks recompute activations in backward (train.gradient_checkpointing)."""
        return list(self.modules().values())

    def samples(self) -> torch.Tensor | None:
        """A (B, 3, H, W) batch in [-1, 1] for the sample grid (train.sample_every), or None."""
        return None

    def sample_prompts(self) -> list[str] | None:
        """The prompts of `samples()`, in order (None: unconditional or unknown)."""
        return None


class NonFiniteStep(Exception):
    """Raised by a task when its loss or gradients are not finite (the update is skipped)."""


TRACKER_PACKAGES = {"tensorboard": "pip install 'crossdistill[log]'", "wandb": "pip install wandb"}


def trackers(report_to: str) -> list[str]:
    """The Accelerate trackers `train.report_to` names; a missing package is one clear line."""
    import importlib.util

    if report_to not in REPORT_TO:
        raise choice_error("train.report_to", report_to, REPORT_TO)
    for name in REPORT_TO[report_to]:
        if importlib.util.find_spec(name) is None:
            raise CrossdistillError(f"train.report_to={report_to} needs the {name} package "
                                    f"({TRACKER_PACKAGES[name]}), or set train.report_to=none")
    return list(REPORT_TO[report_to])


def make_accelerator(cfg: TrainConfig, run_dir: Path):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    log_with = trackers(cfg.report_to) or None
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != cfg.mixed_precision:
        # a second run in the same process (demo, tests) with another precision: Accelerate
        # keeps one global state; reset its precision part (the process group stays)
        AcceleratorState._reset_state(reset_partial_state=False)
    # without an accelerator, say so: Accelerate then runs N launched processes over gloo
    acc = Accelerator(cpu=_no_accelerator(), mixed_precision=cfg.mixed_precision, log_with=log_with,
                      project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")))
    if cfg.batch % (acc.num_processes * cfg.grad_accumulation):
        raise CrossdistillError(f"train.batch {cfg.batch} is not divisible by {acc.num_processes} processes x "
                                f"{cfg.grad_accumulation} micro-batches (train.grad_accumulation)")
    return acc


def step_generator(seed: int, step: int) -> torch.Generator:
    """The same on every process: each draws the global batch's randomness (then `local_part`)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def local_part(acc, x):
    """This process's slice of a tensor drawn for the global batch (`acc` None: all of it)."""
    n = 1 if acc is None else acc.num_processes
    if n == 1:
        return x
    b = len(x) // n
    return x[acc.process_index * b:(acc.process_index + 1) * b]


def micro_batches(cfg: TrainConfig, n: int) -> list[slice]:
    """This process's n rows as `cfg.grad_accumulation` consecutive equal slices. A task
    runs forward + backward on each, its loss divided by their number, then one update."""
    k = cfg.grad_accumulation
    if n % k:
        raise CrossdistillError(f"{n} rows per process do not split into {k} micro-batches (train.grad_accumulation)")
    m = n // k
    return [slice(i * m, (i + 1) * m) for i in range(k)]


def mean_logs(rows: list[dict[str, float]]) -> dict[str, float]:
    """The micro-batches' logged numbers, averaged (a key only some rows log, over those)."""
    keys = dict.fromkeys(k for r in rows for k in r)
    return {k: sum(r[k] for r in rows if k in r) / sum(k in r for r in rows) for k in keys}


def average_gradients(acc, params) -> None:
    """Data parallelism for modules that are not wrapped: all-reduce (mean) every gradient
    after backward, the same arithmetic as DDP. No-op in one process; sharded (FSDP)
    parameters are skipped, FSDP has averaged their gradients already."""
    if acc.num_processes == 1:
        return
    from accelerate.utils import reduce

    for p in params:
        if p.grad is not None and not is_sharded(p):
            p.grad.copy_(reduce(p.grad, reduction="mean"))


def enable_gradient_checkpointing(modules) -> int:
    """Switch on diffusers' gradient checkpointing in every submodule that supports it."""
    n = 0
    for m in modules:
        for sub in m.modules():
            if getattr(sub, "_supports_gradient_checkpointing", False) and hasattr(sub, "enable_gradient_checkpointing"):
                sub.enable_gradient_checkpointing()
                n += 1
    return n


def unwrap(acc, module: torch.nn.Module) -> torch.nn.Module:
    return acc.unwrap_model(module)


def check_run_dir(run_dir: Path, overwrite: bool = False) -> None:
    """Refuse to train into an existing, non-empty folder that is not a crossdistill run
    (a folder holding checkpoints of an older run without the marker is one)."""
    from ..io import refuse_foreign

    if not any(Path(run_dir).glob("ckpt-*")):
        refuse_foreign(run_dir, overwrite, "run")


def claim_run_dir(run_dir: Path, overwrite: bool = False) -> Path:
    """Check `run_dir` (see `check_run_dir`), create it and mark it as a run folder."""
    from ..io import RUN_MARKER

    run_dir = Path(run_dir)
    check_run_dir(run_dir, overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).write_text("crossdistill run\n")
    return run_dir


def prepare(task: Task, cfg: TrainConfig, run_dir: Path):
    """Everything before the first step, in one place: the accelerator, FSDP sharding of
    the task's `shard_targets`, the task's own setup (optimizers over the parameters as
    sharding left them), gradient checkpointing. Returns (accelerator, sharded?).
    Benchmarks call this and then time `task.step` itself."""
    acc = make_accelerator(cfg, Path(run_dir))
    fsdp = uses_fsdp(acc, cfg.parallel)
    if fsdp:   # before setup: the task builds its optimizers over the sharded parameters
        units = shard(acc, task.shard_targets())
        acc.print(f"{task.name}: FSDP, {units} units sharded over {acc.num_processes} processes" if units else
                  f"{task.name}: FSDP, nothing to shard in this stage (data-parallel)")
    task.setup(acc)
    if cfg.gradient_checkpointing and not enable_gradient_checkpointing(task.checkpointing_targets()):
        acc.print("warning: gradient_checkpointing is on but no model here supports it")
    return acc, fsdp


def run(task: Task, cfg: TrainConfig, run_dir: Path, config_dump: dict | None = None,
        progress: bool = True, overwrite: bool = False) -> Path:
    """Train `task` to `cfg.steps`, resuming from `run_dir` if it holds checkpoints."""
    from tqdm.auto import tqdm

    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = claim_run_dir(run_dir, overwrite)
    acc, fsdp = prepare(task, cfg, run_dir)
    modules = {k: unwrap(acc, m) for k, m in task.modules().items()}
    sharded = fsdp and any(is_sharded(p) for m in modules.values() for p in m.parameters())
    start, resumed_from = load_latest(run_dir, modules, task.optimizers(), acc.process_index, acc.num_processes,
                                      agree=lambda ok: every_process(ok, acc.device))
    if acc.num_processes > 1:
        acc.print(f"{task.name}: {acc.num_processes} processes ({acc.distributed_type.value}), "
                  f"global batch {cfg.batch}, {cfg.batch // acc.num_processes} per process")
    if acc.is_main_process:
        (run_dir / "config.json").write_text(json.dumps(config_dump or {}, indent=1, default=str))
        if acc.log_with:   # wandb writes under the run folder too (offline runs: WANDB_MODE=offline)
            (run_dir / "logs").mkdir(exist_ok=True)
            acc.init_trackers(task.name, config=None, init_kwargs={"wandb": {"dir": str(run_dir / "logs")}})
    history_path = run_dir / "history.jsonl"
    if start == 0 and history_path.exists():
        history_path.unlink()
    if acc.is_main_process:   # one line per invocation: where it started and from which checkpoint
        if start:
            acc.print(f"{task.name}: resuming from {resumed_from} (step {start} of {cfg.steps})")
        with open(run_dir / "invocations.jsonl", "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "start_step": start,
                                "checkpoint": resumed_from, "steps": cfg.steps,
                                "processes": acc.num_processes}) + "\n")
    bad = 0
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=task.name,
               disable=not (progress and acc.is_main_process))
    for step in bar:
        try:
            with acc.autocast():
                logs = task.step(step, step_generator(cfg.seed, step))
            bad = 0
        except torch.OutOfMemoryError:
            raise CrossdistillError(
                f"out of memory at step {step} (global batch {cfg.batch} over {acc.num_processes} processes); "
                f"lower train.batch, set train.gradient_checkpointing=true, train.mixed_precision=bf16 and "
                f"weights_dtype=bf16, or use fake.kind=lora; the last checkpoint is kept in {run_dir}") from None
        except NonFiniteStep as e:
            bad += 1
            acc.print(f"warning: step {step} skipped: {e} ({bad} in a row)")
            if bad >= cfg.max_bad_steps:
                raise CrossdistillError(f"{bad} non-finite steps in a row at step {step}; stopped. The last "
                                        f"good checkpoint is kept in {run_dir}; try a lower learning rate") from None
            continue
        if acc.is_main_process:
            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if not k.startswith("_")}, refresh=False)
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                if acc.log_with:
                    acc.log(logs, step=step + 1)
                with open(history_path, "a") as f:
                    f.write(json.dumps({"step": step + 1, **logs}) + "\n")
        if cfg.sample_every and acc.is_main_process and (
                (step + 1) % cfg.sample_every == 0 or step + 1 == cfg.steps):
            images = task.samples()
            if images is not None:
                write_samples(acc, run_dir, step + 1, images, task.sample_prompts())
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            acc.wait_for_everyone()
            if sharded:   # every process writes its own shards (a collective; nothing is gathered)
                save_sharded_checkpoint(run_dir, step + 1, acc, modules, task.optimizers(), keep=cfg.keep_checkpoints)
            elif acc.is_main_process:
                save_checkpoint(run_dir, step + 1, modules, task.optimizers(), keep=cfg.keep_checkpoints)
    acc.wait_for_everyone()
    if acc.is_main_process:
        task.export(run_dir)
        if acc.log_with:
            acc.end_training()
    return run_dir


def write_samples(acc, run_dir: Path, step: int, images: torch.Tensor, prompts: list[str] | None = None) -> None:
    """A grid of (B, 3, H, W) images in [-1, 1]: run_dir/samples/step-XXXXXXX.png and the
    trackers; their prompts in samples/prompts.json (the quality-versus-step curves score
    each grid with them)."""
    from PIL import Image

    from ..data.images import tile, to_uint8

    grid = tile(to_uint8(images.detach().float()))
    folder = run_dir / "samples"
    folder.mkdir(exist_ok=True)
    Image.fromarray(grid).save(folder / f"step-{step:07d}.png")
    if prompts is not None:
        tmp = folder / ".prompts.json.tmp"
        tmp.write_text(json.dumps(prompts))
        tmp.replace(folder / "prompts.json")
    for tracker in acc.trackers:   # the PNG is there whatever the tracker takes
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", grid, step, dataformats="HWC")
        elif tracker.name == "wandb":
            tracker.log_images({"samples": [grid]}, step=step)


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, cfg: TrainConfig, step: int,
                   base_lr: float, name: str = "", terms: dict | None = None) -> dict[str, float]:
    """After backward and the gradient all-reduce: refuse a non-finite step, clip the
    gradient norm (`cfg.max_grad_norm`), set the warm-up learning rate, step. Returns the
    pre-clipping gradient norm when clipping is on (logged as `<name>_grad_norm`).
    `name`, `terms`: what a refusal names (the optimizer, and the logged loss terms)."""
    params = list(params)
    finite_or_raise(loss, params, name, terms)
    logs = {}
    if cfg.max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], cfg.max_grad_norm)
        logs["grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    scale = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    for g in opt.param_groups:
        g["lr"] = base_lr * scale
    opt.step()
    return logs


def finite_or_raise(loss: torch.Tensor, params, name: str = "", terms: dict | None = None) -> None:
    """Before an optimizer step: refuse non-finite losses or gradients (every process
    decides alike: with sharded gradients each sees only its shard, so they agree first).
    The refusal names the optimizer, the logged terms that are not finite, and any
    `*_nonfinite` share a task logs for an intermediate (a Bridge's output)."""
    params = list(params)
    bad_loss = not bool(torch.isfinite(loss))
    bad_grad = any(p.grad is not None and not bool(torch.isfinite(local(p.grad)).all()) for p in params)
    if any_process(bad_loss or bad_grad, params):
        terms = terms or {}
        which = [k for k, v in terms.items() if not math.isfinite(v)]
        # an intermediate's share of non-finite values (`*_nonfinite`, e.g. a Bridge's output)
        which += [f"{k}={v:.2g}" for k, v in terms.items() if k.endswith("_nonfinite") and v > 0]
        where = f"{name}: " if name else ""
        raise NonFiniteStep(where + (f"loss is {loss.item()}" if bad_loss else "gradient is not finite (on some process)")
                            + (f"; non-finite terms: {', '.join(which)}" if which else ""))



@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """EMA of the trained weights (those of `model` that require grad; a frozen base is
    skipped) with warm-up: the decay ramps as (1 + step) / (10 + step) up to `decay`."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        if pm.requires_grad:
            pe.lerp_(pm, 1 - d)
