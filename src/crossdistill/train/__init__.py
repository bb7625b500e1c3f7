"""The training loop shared by stage 1 (Bridge) and stage 2 (distillation)."""

from .loop import NonFiniteStep, TrainConfig, ema_update, finite_or_raise, run

__all__ = ["NonFiniteStep", "TrainConfig", "ema_update", "finite_or_raise", "run"]
