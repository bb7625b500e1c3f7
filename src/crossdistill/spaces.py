"""Latent spaces: a VAE plus the normalisation and packing its denoiser expects.

Three representations, as in EDM2's encoders: pixels in [-1, 1] <-> raw VAE latents
<-> normalised latents `(raw - shift) * scale`. Everything outside this module works
with normalised latents in spatial layout (B, C, h, w); only the Flux denoiser packs
them into 2x2 patch tokens, through `pack` / `unpack` here. Nobody else multiplies by
a scaling factor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import CrossdistillError


class LatentSpace:
    """A diffusers `AutoencoderKL` with the normalisation read from its config.

    `patch` is the token packing factor of the denoiser family (2 for Flux, whose
    transformer sees 2x2 latent patches as one token; 1 otherwise).
    """

    def __init__(self, vae, patch: int = 1):
        cfg = vae.config
        self.vae = vae
        self.scale = float(cfg.scaling_factor)
        self.shift = float(getattr(cfg, "shift_factor", None) or 0.0)
        self.factor = 2 ** (len(cfg.block_out_channels) - 1)
        self.channels = int(cfg.latent_channels)
        self.patch = int(patch)

    def __repr__(self) -> str:
        return (f"LatentSpace(channels={self.channels}, factor={self.factor}, scale={self.scale}, "
                f"shift={self.shift}, patch={self.patch})")

    # -- shapes ---------------------------------------------------------------
    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Normalised latent shape (C, h, w) for an image of `height` x `width` pixels."""
        multiple = self.factor * self.patch
        for name, size in (("height", height), ("width", width)):
            if size <= 0 or size % multiple:
                raise CrossdistillError(
                    f"image {name} {size} is not a positive multiple of {multiple} "
                    f"(VAE factor {self.factor} x packing {self.patch})")
        return (self.channels, height // self.factor, width // self.factor)

    # -- normalisation ----------------------------------------------------------
    def normalize(self, raw: Tensor) -> Tensor:
        return (raw - self.shift) * self.scale

    def denormalize(self, z: Tensor) -> Tensor:
        return z / self.scale + self.shift

    # -- pixels <-> normalised latents -----------------------------------------
    def encode(self, images: Tensor, generator: torch.Generator | None = None,
               sample: bool = False) -> Tensor:
        """Images in [-1, 1], (B, 3, H, W) -> normalised latents (B, C, H/f, W/f).

        Uses the posterior mean unless `sample` (then draws with `generator`).
        """
        self.latent_shape(images.shape[-2], images.shape[-1])
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        raw = dist.sample(generator) if sample else dist.mode()
        return self.normalize(raw)

    def decode(self, z: Tensor) -> Tensor:
        """Normalised latents -> images in [-1, 1] (not clamped)."""
        return self.vae.decode(self.denormalize(z).to(self.vae.dtype)).sample

    # -- packing (Flux) ---------------------------------------------------------
    def pack(self, z: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, h/p * w/p, C*p*p) tokens, row-major over patches."""
        p = self.patch
        b, c, h, w = z.shape
        z = z.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return z.reshape(b, (h // p) * (w // p), c * p * p)

    def unpack(self, tokens: Tensor, h: int, w: int) -> Tensor:
        """Inverse of `pack` for a latent of spatial size h x w."""
        p = self.patch
        b, _, d = tokens.shape
        c = d // (p * p)
        z = tokens.view(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return z.reshape(b, c, h, w)
