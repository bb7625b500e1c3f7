"""Variance-preserving (DDPM) schedule shared by the UNet families (SD 1.x/2.x, SDXL).

x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps  (Ho et al. 2020, eq. 4); the network
predicts eps or v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import CrossdistillError
from .base import Denoiser

PARAMETERIZATIONS = ("epsilon", "v_prediction")


class VPDenoiser(Denoiser):
    backbone = "unet"

    def __init__(self, components, defaults=None, architecture_only=False):
        super().__init__(components, defaults, architecture_only)
        pred = self.scheduler.config.prediction_type
        if pred not in PARAMETERIZATIONS:
            raise CrossdistillError(
                f"unsupported prediction_type {pred!r} for {self.family}; allowed: {', '.join(PARAMETERIZATIONS)}")
        self.parameterization = pred
        # abar_t from the scheduler's own betas, so every VP scheduler agrees with training
        self._abar = self.scheduler.alphas_cumprod.clone().float()

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def t_max(self) -> Tensor:
        return torch.tensor(self.num_train_timesteps - 1)

    def _coef(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        abar = self._abar.to(like.device)[t.long().to(like.device)].to(like.dtype)
        abar = abar.view(-1, *([1] * (like.ndim - 1)))
        return abar.sqrt(), (1 - abar).sqrt()

    def add_noise(self, x0, t, noise):
        a, s = self._coef(t, x0)
        return a * x0 + s * noise

    def to_x0(self, x_t, t, output):
        a, s = self._coef(t, x_t)
        if self.parameterization == "epsilon":
            return (x_t - s * output) / a
        return a * x_t - s * output

    def target(self, x0, noise, t):
        if self.parameterization == "epsilon":
            return noise
        a, s = self._coef(t, x0)
        return a * noise - s * x0

    def time_at(self, frac):
        return (torch.as_tensor(frac, dtype=torch.float64) * (self.num_train_timesteps - 1)).round().long()

    def sample_timesteps(self, n, generator=None, lo=0.0, hi=1.0, density="uniform"):
        if density != "uniform":
            raise CrossdistillError(f"unknown timestep density {density!r} for {self.family}; allowed: uniform")
        last = self.num_train_timesteps - 1
        a, b = int(round(lo * last)), int(round(hi * last))
        return torch.randint(a, b + 1, (n,), generator=generator)

    def attention_sites(self):
        from diffusers.models.attention_processor import Attention

        from ..attention import AttentionSite

        kinds = {"attn1": "self", "attn2": "cross"}
        return [AttentionSite(n, m, kinds[n.rsplit(".", 1)[-1]]) for n, m in self.model.named_modules()
                if isinstance(m, Attention) and n.rsplit(".", 1)[-1] in kinds]

    def _unet_kwargs(self, x_t: Tensor, cond) -> dict:
        return {}

    def model_output(self, x_t, t, cond, guidance=None):
        return self.model(x_t, t, encoder_hidden_states=cond.embeds,
                          added_cond_kwargs=self._unet_kwargs(x_t, cond) or None, return_dict=False)[0]
