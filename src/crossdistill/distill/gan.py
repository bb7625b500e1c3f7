"""DMD2's optional GAN head: a small classifier on the fake score's middle features.

The fake score's middle block (a UNet's mid block; the middle transformer block of an
MM-DiT or Flux) is hooked; its image-stream output, averaged over positions, feeds a
two-layer head giving one logit. The head and the fake score are trained to tell noised
real Teacher-space latents from noised bridged generator samples; the generator is
trained to make its samples read as real (DMD2, Yin et al. 2024, sec. 4.3).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn


def feature_module(model: nn.Module) -> nn.Module:
    """The middle block of a diffusers backbone (by structure, not by family name)."""
    if getattr(model, "mid_block", None) is not None:
        return model.mid_block
    for name in ("transformer_blocks", "single_transformer_blocks"):
        blocks = getattr(model, name, None)
        if blocks is not None and len(blocks):
            return blocks[len(blocks) // 2]
    raise TypeError(f"no middle block found in {type(model).__name__}")


def _image_stream(out) -> Tensor:
    """(B, C) features from a block output: the image stream (last tuple item), position-averaged."""
    x = out[-1] if isinstance(out, (tuple, list)) else out
    return x.mean(dim=(2, 3)) if x.ndim == 4 else x.mean(dim=1)


class GanHead(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, channels), nn.SiLU(),
                                 nn.Linear(channels, 1))

    def forward(self, feats: Tensor) -> Tensor:
        return self.net(feats.float()).squeeze(-1)


class FeatureTap:
    """Records the hooked block's image-stream features during a forward pass."""

    def __init__(self, model: nn.Module):
        self.module, self.feats = feature_module(model), None

    @contextmanager
    def recording(self):
        handle = self.module.register_forward_hook(lambda m, a, out: setattr(self, "feats", _image_stream(out)))
        try:
            yield self
        finally:
            handle.remove()
