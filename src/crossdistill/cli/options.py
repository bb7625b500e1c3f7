"""What the commands share: options declared once, and the run-a-stage helper."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import CrossdistillError

THREADS = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default, the machine's cores)")
DEVICE = typer.Option("auto", help="auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps")
DTYPE = typer.Option("auto", help="auto (fp16 on a GPU, fp32 on the CPU) | fp32 | fp16 | bf16")
SET = typer.Option(None, "--set", help="override a config key, e.g. train.steps=100 (repeatable; several "
                                       "key=value words may follow one --set)")
DRY_RUN = typer.Option(False, help="print the resolved config and exit")
OVERWRITE = typer.Option(False, help="train into an existing folder that is not a run")

# generation: `generate` and `eval --model` take the same options
PROMPTS_FILE = typer.Option(None, help="prompts, one per line")
N_PER_PROMPT = typer.Option(1, help="images per prompt")
SEED = typer.Option(0, help="image k uses seed + k")
STEPS = typer.Option(None, help="sampling steps (model default)")
GUIDANCE = typer.Option(None, help="CFG scale (model default)")
BATCH_SIZE = typer.Option(16, help="images per forward pass")
HEIGHT = typer.Option(None, help="image height in pixels (model default)")
WIDTH = typer.Option(None, help="image width in pixels (model default)")


def generation_config(model: str, prompts: list[str], out: Path, steps: Optional[int], guidance: Optional[float],
                      n_per_prompt: int, seed: int, batch_size: int, height: Optional[int], width: Optional[int],
                      device: str, dtype: str, overwrite: bool = False):
    """The `GenerateConfig` of the shared generation options, checked."""
    from ..generate import GenerateConfig

    if not prompts:
        raise CrossdistillError("no prompts given (use --prompt or --prompts-file)")
    if batch_size < 1:
        raise CrossdistillError(f"--batch-size must be >= 1, got {batch_size}")
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
