"""`distill(cfg, run_dir)`: stage 2 end to end, resumable by rerunning it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import to_dict
from ..errors import CrossdistillError
from ..train import processes, run
from .config import DistillConfig
from .task import DistillTask


def distill(cfg: DistillConfig, run_dir: Path, prompts: list[str] | None = None, progress: bool = True,
            overwrite: bool = False) -> Path:
    """Train (or resume) the Student of `cfg` in `run_dir` and export RUN/student."""
    check_same_teachers(cfg, Path(run_dir))
    if 0 < cfg.train.steps <= cfg.t_first.steps:   # legitimate for a run continued later, worth saying (once)
        processes().print(f"warning: t_first.steps={cfg.t_first.steps} >= train.steps={cfg.train.steps}: every "
                          f"step of this run draws Teacher times from t_first.t_range="
                          f"{list(cfg.t_first.t_range)}, none from t_range")
    torch.manual_seed(cfg.train.seed)
    task = DistillTask.from_config(cfg, prompts)
    return run(task, cfg.train, run_dir, to_dict(cfg), progress=progress, overwrite=overwrite)


def stored_teachers(run_dir: Path) -> list[dict]:
    """The Teachers of a run's written config (RUN/config.json), [] if there is none."""
    stored = Path(run_dir) / "config.json"
    return json.loads(stored.read_text()).get("teachers", []) if stored.is_file() else []


def check_same_teachers(cfg: DistillConfig, run_dir: Path) -> None:
    """A run resumes with the Teachers it was trained from, in the same order: the fake
    scores are checkpointed by position (fake, fake_t1, ...)."""
    if not any(run_dir.glob("ckpt-*")):
        return
    before = [t.get("model") for t in stored_teachers(run_dir)]
    now = [tc.model for tc in cfg.teachers]
    if before != now:
        raise CrossdistillError(f"{run_dir} was trained from Teacher(s) {before}, not {now}; resume with the same "
                                f"Teachers in the same order, or choose another --out")
