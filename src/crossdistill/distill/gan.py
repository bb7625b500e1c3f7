"""DMD2's optional GAN head: a small classifier on the fake score's middle features.

The fake score's middle block (a UNet's mid block; the middle transformer block of an
MM-DiT or Flux) is hooked. Two heads: "pooled", its image-stream output averaged over
positions into a two-layer MLP giving one logit per image; "conv" (DMD2's SD 1.5 head),
convolutions over the spatial feature map giving one logit per position (tokens are laid
back on their square grid). The head and the fake score are trained to tell noised
real Teacher-space latents from noised bridged generator samples; the generator is
trained to make its samples read as real (DMD2, Yin et al. 2024, sec. 4.3).
"""

from __future__ import annotations

from contextlib import contextmanager

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
    """(B, C, h, w) features from a block output: the image stream (last tuple item); tokens
    (B, N, C) are laid back on their square grid."""
    x = out[-1] if isinstance(out, (tuple, list)) else out
    if x.ndim == 4:
        return x
    side = int(round(x.shape[1] ** 0.5))
    if side * side != x.shape[1]:
        raise ValueError(f"cannot lay {x.shape[1]} tokens on a square grid")
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


class GanHead(nn.Module):
    """"pooled": position-averaged features -> LayerNorm, Linear, SiLU, Linear -> (B,) logits;
    "conv": 3x3 conv, GroupNorm, SiLU (twice) -> 1x1 conv -> (B, h, w) logits."""

    def __init__(self, channels: int, kind: str = "pooled"):
        super().__init__()
        self.kind = kind
        if kind == "pooled":
            self.net = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, channels), nn.SiLU(),
                                     nn.Linear(channels, 1))
        else:
            g = next(k for k in (32, 16, 8, 4, 2, 1) if channels % k == 0)
            self.net = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(g, channels), nn.SiLU(),
                                     nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(g, channels), nn.SiLU(),
                                     nn.Conv2d(channels, 1, 1))

    def forward(self, feats: Tensor) -> Tensor:
        if self.kind == "pooled":
            return self.net(feats.float().mean(dim=(2, 3))).squeeze(-1)
        return self.net(feats.float()).squeeze(1)


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


class PixelDiscriminator(nn.Module):
    """A small convolutional classifier on Student-resolution images in [-1, 1] (`gan.space:
    student`): it sees exactly what users see, so it can penalise blotchy or tinted
    backgrounds that the Teacher's score, through the Bridge, lets pass. One logit per
    position of a 4x-downsampled grid."""

    def __init__(self, width: int = 32):
        super().__init__()
        g = next(k for k in (8, 4, 2, 1) if width % k == 0)
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.GroupNorm(g, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 4, stride=2, padding=1), nn.GroupNorm(g, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.float()).squeeze(1)
