"""Text conditioning for the prompts of one batch, computed when the batch is drawn.

Nothing is encoded ahead: memory does not grow with the number of captions (100k SD 3.5
captions would be hundreds of GB of T5 + CLIP states), and a batch's conditioning
depends only on its prompts, so a resumed run encodes exactly what an uninterrupted
one does. Each process encodes only its own part of the global batch.
"""

from __future__ import annotations

import torch
from torch import Tensor


class PromptConditioner:
    """A denoiser's conditioning of a list of prompts, and their caption-token masks."""

    def __init__(self, den):
        self.den = den

    @torch.no_grad()
    def __call__(self, prompts: list[str]):
        """The `Conditioning` of `prompts` (each distinct prompt encoded once)."""
        table, rows = self.den.encode_table(prompts)
        return table.index(rows)

    @torch.no_grad()
    def uncond(self):
        """The empty prompt's conditioning, batch 1 (classifier-free guidance)."""
        return self.den.uncond(1)

    def caption_mask(self, prompts: list[str], length: int) -> Tensor:
        """(B, length) bool, True on each prompt's own tokens (see `Denoiser.caption_mask`)."""
        return self.den.caption_mask(prompts, length)


class DummyConditioner(PromptConditioner):
    """Random conditioning of the exact shapes, every text position a caption token: for
    full-size benchmarks of models loaded without their text encoders."""

    def __call__(self, prompts):
        return self.den.dummy_conditioning(len(prompts))

    def uncond(self):
        return self.den.dummy_conditioning(1)

    def caption_mask(self, prompts, length):
        return torch.ones(len(prompts), length, dtype=torch.bool)
