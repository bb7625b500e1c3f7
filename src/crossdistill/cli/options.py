"""What the commands share: options declared once, and the run-a-stage helper."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from ..checks import DTYPE as DTYPE_NAMES, GUIDANCE as GUIDANCE_RANGE, IMAGES, SAMPLING_STEPS, SEED as SEED_RANGE, SIZE, \
    THREADS as THREADS_RANGE, Accepts
from ..errors import CrossdistillError


def checked(default, *decls: str, help: str = "", hidden: bool = False, **rule):
    """An option that declares what it accepts (`checks.Accepts(**rule)`); its callback
    checks the value as click parses it, so a refused value stops the command before it
    runs, with one line naming the flag, the value and what is allowed. The declaration
    stays on the option (`.accepts`: the property tests draw their cases from it)."""
    accepts = Accepts(**rule)

    def callback(ctx: typer.Context, param: typer.CallbackParam, value):
        if ctx.resilient_parsing or value is None:
            return value
        return accepts.check(max(param.opts, key=len), value)

    info = typer.Option(default, *decls, help=f"{help} [{accepts.describe(isinstance(default, int))}]".strip(),
                        hidden=hidden, callback=callback)
    info.accepts = accepts
    return info


MAX_BATCH, MAX_IMAGES = 4096, IMAGES["le"]
THREADS = checked(0, "--threads", help="torch CPU threads (0: torch's default, the machine's cores)", **THREADS_RANGE)
DEVICE = checked("auto", help="auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps", nonempty=True)
DTYPE = checked("auto", help="auto (fp16 on a GPU, fp32 on the CPU) | fp32 | fp16 | bf16", **DTYPE_NAMES)
SET = typer.Option(None, "--set", help="override a config key, e.g. train.steps=100 (repeatable; several "
                                       "key=value words may follow one --set)")
DRY_RUN = typer.Option(False, help="print the resolved config and exit")
OVERWRITE = typer.Option(False, help="train into an existing folder that is not a run")

# generation: `generate` and `eval --model` take the same options
PROMPTS_FILE = typer.Option(None, help="prompts, one per line")
# the same ranges as generate.GenerateConfig declares
N_PER_PROMPT = checked(1, help="images per prompt", **IMAGES)
SEED = checked(0, "--seed", help="image k uses seed + k", **SEED_RANGE)
STEPS = checked(None, help="sampling steps (model default)", **SAMPLING_STEPS)
GUIDANCE = checked(None, help="CFG scale (model default)", **GUIDANCE_RANGE)
BATCH_SIZE = checked(16, help="images per forward pass", **IMAGES)
HEIGHT = checked(None, help="image height in pixels (model default)", **SIZE)
WIDTH = checked(None, help="image width in pixels (model default)", **SIZE)


def generation_config(model: str, prompts: list[str], out: Path, steps: Optional[int], guidance: Optional[float],
                      n_per_prompt: int, seed: int, batch_size: int, height: Optional[int], width: Optional[int],
                      device: str, dtype: str, overwrite: bool = False):
    """The `GenerateConfig` of the shared generation options, checked."""
    from ..generate import GenerateConfig

    if not prompts:
        raise CrossdistillError("no prompts given (use --prompt or --prompts-file)")
    return GenerateConfig(model, prompts, out, steps, guidance, n_per_prompt, seed, batch_size, height, width,
                          overwrite=overwrite, device=device, dtype=dtype)


def threads(n: int) -> None:
    from ..runtime import set_threads

    set_threads(n)


def main_process() -> bool:
    """False in the non-zero ranks of an `accelerate launch` (they print nothing)."""
    return os.environ.get("RANK", "0") == "0"


def run_stage(cls, config: Optional[str], overrides: Optional[List[str]], dry_run: bool, n_threads: int, train,
              out: Path, overwrite: bool = False) -> bool:
    """Resolve a stage's typed config from a named config or YAML file + --set; print it
    (--dry-run) or train. True when it trained."""
    import yaml

    from ..config import load_config, to_dict

    cfg = load_config(cls, config, overrides or [])
    if dry_run:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return False
    threads(n_threads)
    from ..train.loop import check_run_dir

    check_run_dir(out, overwrite)   # before any model is loaded
    train(cfg, out, overwrite=overwrite)
    return True
