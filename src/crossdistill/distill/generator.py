"""The Student generator: the Student denoiser evaluated at a fixed list of its timesteps.

One step (the paper's Student): z = x0(noise, t_max) in the Student's own
parameterisation (for an epsilon Student, (x_T - sqrt(1 - abar_T) eps) / sqrt(abar_T): the
1 / sqrt(abar_T) ~ 15x amplification of docs/design.md, "Pitfalls"). Exported as a
standard diffusers pipeline whose scheduler, with `num_inference_steps=1`, returns
exactly this x0 (DDIM, trailing spacing, final alpha 1).

K steps (2-4): x0 at t_1 = t_max, re-noised to t_2 with fresh noise, x0 again, ... the
last x0 is the image: what diffusers' `LCMScheduler` does with `num_inference_steps=K`
(its timesteps are the generator's; its boundary scalings c_skip ~ 1e-7, c_out ~ 1 at
these timesteps leave x0 as is). Training uses DMD2's backward simulation: the input at
step k is made by the generator's own earlier steps (without gradient), so training sees
what inference sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..denoisers import Conditioning, Denoiser


@dataclass
class Draw:
    """The generator's randomness for a batch: the initial noise, and for K > 1 steps the
    step each row is trained at and the re-noising noise of every later step."""

    noise: Tensor                   # (B, C, h, w)
    step: Tensor | None = None      # (B,) in [0, K)
    renoise: Tensor | None = None   # (B, K - 1, C, h, w)

    def __len__(self) -> int:
        return len(self.noise)

    def __getitem__(self, part) -> "Draw":
        return Draw(*(None if x is None else x[part] for x in (self.noise, self.step, self.renoise)))

    def to(self, device) -> "Draw":
        return Draw(*(None if x is None else x.to(device) for x in (self.noise, self.step, self.renoise)))


def generator_timesteps(student: Denoiser, steps: int) -> list[int]:
    """The Student timesteps a K-step generator runs at: the exported scheduler's own, so
    `num_inference_steps=K` in vanilla diffusers reproduces it (one step: t_max)."""
    if steps == 1:
        return [int(student.t_max)]
    sched = few_step_scheduler(student)
    sched.set_timesteps(steps)
    return [int(t) for t in sched.timesteps]


class StudentGenerator(torch.nn.Module):
    """The Student generator (one step by default; `steps` > 1: a few-step generator)."""

    def __init__(self, student: Denoiser, steps: int = 1):
        super().__init__()
        self.student = student
        self.backbone = student.model        # the only trainable part
        self.timesteps = generator_timesteps(student, steps)

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def draw(self, n: int, shape: tuple[int, ...], gen: torch.Generator) -> Draw:
        """A batch's randomness from `gen` (one step: the noise only, as it always was)."""
        noise = torch.randn(n, *shape, generator=gen)
        if self.steps == 1:
            return Draw(noise)
        return Draw(noise, torch.randint(0, self.steps, (n,), generator=gen),
                    torch.randn(n, self.steps - 1, *shape, generator=gen))

    def x0(self, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        return self.student.to_x0(x, t, self.student.model_output(x, t, cond))

    def _t(self, i: int | Tensor, like: Tensor) -> Tensor:
        """The timestep of step i (an int: every row; a tensor: per row)."""
        t = torch.as_tensor(self.timesteps, device=like.device)
        return t[i.to(like.device)] if isinstance(i, Tensor) else t[i].expand(len(like))

    def forward(self, draw: Draw | Tensor, cond: Conditioning) -> Tensor:
        """Training (a Draw with `step`): each row's x0 at its own step, its input made by
        the earlier steps without gradient. Inference (no `step`): every step, the last x0."""
        draw = draw if isinstance(draw, Draw) else Draw(draw)
        x, k = draw.noise, draw.step
        last = self.steps - 1 if k is None else int(k.max())
        with torch.no_grad():
            for i in range(last):   # backward simulation: x0, then re-noise to the next step
                nxt = self.student.add_noise(self.x0(x, self._t(i, x), cond), self._t(i + 1, x),
                                             draw.renoise[:, i].to(x.device, x.dtype))
                x = nxt if k is None else torch.where((k > i).to(x.device).view(-1, 1, 1, 1), nxt, x)
        return self.x0(x, self._t(self.steps - 1 if k is None else k, x), cond)


def _schedule_config(student: Denoiser) -> dict:
    cfg = dict(student.scheduler.config)
    return {k: cfg[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                                "trained_betas", "prediction_type", "rescale_betas_zero_snr") if k in cfg}


def one_step_scheduler(student: Denoiser, final_alpha_bar: float | None = None):
    """A DDIM scheduler with the Student's training schedule for which one step from
    pure noise at t = T - 1 returns the model's x0 prediction exactly.

    `final_alpha_bar`: the schedule rescaled (log alpha_bar_t scaled by one factor, betas
    recomputed) so that alpha_bar at t = T - 1 is this value: a gentler x0 map for a
    one-step generator, x0 = (x - sqrt(1 - a) eps) / sqrt(a), than SD 1.5's a = 0.0047
    (a 15x gain on every error of eps). The saved scheduler carries the rescaled betas."""
    from diffusers import DDIMScheduler

    cfg = _schedule_config(student)
    if final_alpha_bar is not None:
        abar = student.scheduler.alphas_cumprod.double()
        abar = abar.log().mul(math.log(final_alpha_bar) / float(abar[-1].log())).exp()
        betas = 1 - abar / torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
        cfg = dict(cfg, trained_betas=betas.tolist(), beta_schedule="linear")
    return DDIMScheduler(**cfg, timestep_spacing="trailing", set_alpha_to_one=True,
                         clip_sample=False, steps_offset=1)   # ignored by "trailing"; 1 keeps diffusers' pipelines quiet


def few_step_scheduler(student: Denoiser):
    """diffusers' LCMScheduler with the Student's training schedule: x0, then re-noise to
    the next timestep (DMD2's multi-step sampler); its `set_timesteps(K)` names the steps."""
    from diffusers import LCMScheduler

    return LCMScheduler(**_schedule_config(student), clip_sample=False,
                        steps_offset=1)   # unused by LCM's timesteps; 1 keeps diffusers' pipelines quiet


def student_scheduler(student: Denoiser, steps: int):
    """The exported scheduler of a `steps`-step Student."""
    return one_step_scheduler(student) if steps == 1 else few_step_scheduler(student)
