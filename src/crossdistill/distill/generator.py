"""The one-step generator: the Student denoiser evaluated once at its noisiest time.

z = x0(noise, t_max) in the Student's own parameterisation (for an epsilon Student,
(x_T - sqrt(1 - abar_T) eps) / sqrt(abar_T): the 1 / sqrt(abar_T) ~ 15x amplification of
docs/design.md, "Pitfalls"). Exported as a standard diffusers pipeline whose scheduler,
with `num_inference_steps=1`, returns exactly this x0 (DDIM, trailing spacing, final
alpha 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoisers import Conditioning, Denoiser


class OneStepGenerator(torch.nn.Module):
    def __init__(self, student: Denoiser):
        super().__init__()
        self.student = student
        self.backbone = student.model        # the only trainable part

    def forward(self, noise: Tensor, cond: Conditioning) -> Tensor:
        t = self.student.t_max.to(noise.device).expand(len(noise))
        return self.student.to_x0(noise, t, self.student.model_output(noise, t, cond))


def one_step_scheduler(student: Denoiser):
    """A DDIM scheduler with the Student's training schedule for which one step from
    pure noise at t = T - 1 returns the model's x0 prediction exactly."""
    from diffusers import DDIMScheduler

    cfg = dict(student.scheduler.config)
    keep = {k: cfg[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                                "trained_betas", "prediction_type", "rescale_betas_zero_snr") if k in cfg}
    return DDIMScheduler(**keep, timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False,
                         steps_offset=1)   # ignored by "trailing"; 1 keeps diffusers' pipelines quiet
