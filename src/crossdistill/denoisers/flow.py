"""Rectified flow shared by the MM-DiT families (SD 3/3.5, Flux).

x_sigma = (1 - sigma) x0 + sigma eps; the network predicts v = eps - x0, so
x0 = x_sigma - sigma v (Esser et al. 2024, SD3 paper, sec. 2). Native time is sigma;
the diffusers transformers take sigma x 1000 (SD3) or sigma (Flux).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..errors import CrossdistillError
from .base import Denoiser

DENSITIES = ("uniform", "logit_normal", "unshifted")


class FlowDenoiser(Denoiser):
    backbone = "transformer"
    parameterization = "flow"

    @property
    def t_max(self) -> Tensor:
        return torch.tensor(1.0)

    def add_noise(self, x0, t, noise):
        s = t.to(x0.device, x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return (1 - s) * x0 + s * noise

    def to_x0(self, x_t, t, output):
        s = t.to(x_t.device, x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
        return x_t - s * output

    def target(self, x0, noise, t):
        return noise - x0

    # -- timesteps --------------------------------------------------------------------
    def _image_seq_len(self, h: int, w: int) -> int:
        p = self.token_patch
        return (h // p) * (w // p)

    def _mu(self, h: int, w: int) -> float:
        """Resolution-dependent shift exponent (Flux's `calculate_shift`)."""
        c = self.scheduler.config
        x1, x2 = c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096)
        y1, y2 = c.get("base_shift", 0.5), c.get("max_shift", 1.15)
        m = (y2 - y1) / (x2 - x1)
        return self._image_seq_len(h, w) * m + (y1 - m * x1)

    def train_shift(self, height: int | None = None, width: int | None = None) -> float:
        """The timestep shift s in sigma = s u / (1 + (s - 1) u) at a given image size."""
        c = self.scheduler.config
        if c.get("use_dynamic_shifting", False):
            res = self.defaults.resolution
            _, h, w = self.latent_shape(height or res, width or res)
            return math.exp(self._mu(h, w))
        return float(c.get("shift", 1.0))

    def sample_timesteps(self, n, generator=None, lo=0.0, hi=1.0, density="uniform"):
        if density == "unshifted":   # sigma itself uniform in [lo, hi]: no time shift toward high noise
            return lo + (hi - lo) * torch.rand(n, generator=generator)
        if density == "uniform":
            u = torch.rand(n, generator=generator)
        elif density == "logit_normal":   # SD3 paper, eq. 19 (m = 0, s = 1)
            u = torch.sigmoid(torch.randn(n, generator=generator))
        else:
            raise CrossdistillError(f"unknown timestep density {density!r}; allowed: {', '.join(DENSITIES)}")
        return self.time_at(lo + (hi - lo) * u)

    def time_at(self, frac):
        u = torch.as_tensor(frac, dtype=torch.float32)
        s = self.train_shift()
        return s * u / (1 + (s - 1) * u)

    def _sigmas(self, steps: int):
        return None

    def _set_timesteps(self, scheduler, steps, shape):
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", False):
            kwargs["mu"] = self._mu(shape[-2], shape[-1])
        sigmas = self._sigmas(steps)
        if sigmas is not None:
            scheduler.set_timesteps(sigmas=sigmas, device=self.device, **kwargs)
        else:
            scheduler.set_timesteps(steps, device=self.device, **kwargs)

    def _native_t(self, scheduler, i, t):
        return scheduler.sigmas[i]


def linear_sigmas(steps: int) -> np.ndarray:
    return np.linspace(1.0, 1 / steps, steps)
