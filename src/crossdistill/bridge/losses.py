"""Stage-1 losses (docs/design.md, "Stage 1"): each takes tensors, returns (loss, logs)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import choice_error

DISTANCES = ("l1", "kl")


def latent_reconstruction(pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
    """L_rec = || B(z_s) - E_t(x) ||^2, mean over elements."""
    loss = (pred.float() - target.float()).pow(2).mean()
    return loss, {"rec": loss.item()}


def map_distance(p: Tensor, q: Tensor, distance: str = "l1") -> Tensor:
    """Per attention row: L1 = sum_k |p - q| (in [0, 2]); KL = sum_k q log(q / p), q the reference."""
    if distance == "l1":
        return (p - q).abs().sum(-1).mean()
    if distance == "kl":
        eps = 1e-8
        return (q * ((q + eps).log() - (p + eps).log())).sum(-1).mean()
    raise choice_error("attention distance", distance, DISTANCES)


def attention_fidelity(maps: dict[str, dict[str, Tensor]], ref: dict[str, dict[str, Tensor]],
                       distance: str = "l1") -> tuple[Tensor, dict[str, float]]:
    """L_attn = sum over layers (and key groups) of the row distance between the
    Teacher's maps on the bridged latent and on the true latent (`ref`, no grad)."""
    total = None
    for layer, groups in maps.items():
        for group, p in groups.items():
            d = map_distance(p.float(), ref[layer][group].detach().float(), distance)
            total = d if total is None else total + d
    if total is None:
        total = torch.zeros(())
    return total, {"attn": total.item()}
