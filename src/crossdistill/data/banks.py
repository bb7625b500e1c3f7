"""Paired latents for stage 1: each image encoded by both VAEs, each at its model's resolution."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PairBank:
    """(Student latent, Teacher latent, prompt) triples; `images`: the Teacher-resolution
    images in [-1, 1], kept for evaluation; `conditioning`: the Teacher's prompt embeddings
    as (table, row of each pair), when computed beforehand (else the task encodes `prompts`)."""
    z_s: torch.Tensor
    z_t: torch.Tensor
    prompts: list[str]
    images: torch.Tensor | None = None
    conditioning: tuple | None = None


@torch.no_grad()
def encode_pairs(images: torch.Tensor, prompts: list[str], student, teacher, s_res: int, t_res: int,
                 keep_images: bool = False, batch: int = 200) -> PairBank:
    """z_t* = E_t(x) at the Teacher's resolution, z_s = E_s(resize(x)) at the Student's."""
    zs, zt = [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        x_t = x if x.shape[-1] == t_res else F.interpolate(x, size=t_res, mode="bilinear", antialias=True)
        x_s = F.interpolate(x, size=s_res, mode="area") if x.shape[-1] != s_res else x
        zt.append(teacher.space.encode(x_t))
        zs.append(student.space.encode(x_s))
    return PairBank(torch.cat(zs), torch.cat(zt), list(prompts), images if keep_images else None)
