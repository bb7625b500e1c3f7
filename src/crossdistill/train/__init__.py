"""The training loop shared by stage 1 (Bridge) and stage 2 (distillation)."""

from .loop import (DTYPES, NonFiniteStep, Task, TrainConfig, average_gradients, check_run_dir, claim_run_dir, default_device,
                   ema_update, finite_or_raise, local_part, mean_logs, micro_batches, optimizer_step, prepare,
                   processes, run, step_generator, weights_dtype)

__all__ = ["DTYPES", "NonFiniteStep", "Task", "TrainConfig", "average_gradients", "check_run_dir", "claim_run_dir",
           "default_device", "ema_update", "finite_or_raise", "local_part", "mean_logs", "micro_batches",
           "optimizer_step", "prepare", "processes", "run", "step_generator", "weights_dtype"]
