"""Stage-1 losses (docs/design.md, "Stage 1"): each takes tensors, returns (loss, logs)."""

from __future__ import annotations

import torch
from torch import Tensor

from dataclasses import dataclass

from ..checks import Checked, accepts
from ..errors import check_fractions, choice_error

DISTANCES = ("l1", "kl")
TOKENS = ("caption", "all")


@dataclass
class AttnConfig(Checked):
    """Attention fidelity (stage 1's second term) and the maps it compares."""
    KEY = "attn."
    weight: float = accepts(1.0, ge=0)       # lambda_attn; 0 disables the Teacher passes
    layers: tuple[int, ...] | None = accepts(None, ge=0, le=999)   # text-attending layers to match (None: all)
    image_to_image: bool = False             # also match image->image attention rows (pooled)
    pool: int = accepts(1, ge=1, le=64)      # spatial pooling of image tokens for image->image
    distance: str = accepts("l1", choices=DISTANCES)   # l1 | kl
    tokens: str = accepts("caption", choices=TOKENS)   # text keys compared: caption (the prompt's own tokens) | all
                                             # (padding too)
    t_range: tuple[float, float] = accepts((0.02, 0.98), ge=0, le=1)   # Teacher timesteps, as fractions of its
                                             # full range

    def validate(self):
        check_fractions("attn.t_range", self.t_range)
        return self

    def spec(self):
        from ..attention import CaptureSpec
        return CaptureSpec(layers=self.layers, image_to_image=self.image_to_image, pool=self.pool)


def latent_reconstruction(pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
    """L_rec = || B(z_s) - E_t(x) ||^2, mean over elements."""
    loss = (pred.float() - target.float()).pow(2).mean()
    return loss, {"rec": loss.item()}


def map_distance(p: Tensor, q: Tensor, distance: str = "l1", keys: Tensor | None = None) -> Tensor:
    """Per attention row: L1 = sum_k |p - q| (in [0, 2]); KL = sum_k q log(q / p), q the
    reference. `keys` (B, K) bool: the sum runs over those keys only (a caption's tokens:
    the rows stay the layer's joint softmax, padding just does not count)."""
    if distance == "l1":
        d = (p - q).abs()
    elif distance == "kl":
        eps = 1e-8
        d = q * ((q + eps).log() - (p + eps).log())
    else:
        raise choice_error("attention distance", distance, DISTANCES)
    if keys is not None:
        d = d * keys[:, None, :].to(d.dtype)
    return d.sum(-1).mean()


def object_map_distance(p: Tensor, q: Tensor, masks: Tensor) -> Tensor:
    """Per-object attention maps, bridged (p) vs true (q), both (B, N image, T text) rows.
    An object's map is the attention mass its tokens (`masks`: (B, G, T), 1 on the
    object's tokens) receive at each image position, normalised over positions: where
    the Teacher looks for that object. Returns the L1 distance per map (in [0, 2]),
    mean over batch and objects."""
    def maps(a):
        m = torch.einsum("bnt,bgt->bgn", a.float(), masks.float())
        return m / m.sum(-1, keepdim=True).clamp_min(1e-12)
    return (maps(p) - maps(q)).abs().sum(-1).mean()


def attention_fidelity(maps: dict[str, dict[str, Tensor]], ref: dict[str, dict[str, Tensor]],
                       distance: str = "l1", text_keys: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """L_attn = sum over layers (and key groups) of the row distance between the
    Teacher's maps on the bridged latent and on the true latent (`ref`, no grad).
    `text_keys` (B, T) bool: the text keys that count (the captions' tokens; None: all)."""
    total = None
    for layer, groups in maps.items():
        for group, p in groups.items():
            keys = text_keys.to(p.device) if group == "text" and text_keys is not None else None
            d = map_distance(p.float(), ref[layer][group].detach().float(), distance, keys)
            total = d if total is None else total + d
    if total is None:
        total = torch.zeros(())
    return total, {"attn": total.item()}
