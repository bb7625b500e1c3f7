"""What stage 2 logs about the generated Student latents besides its losses.

DMD's gradient reaches the generator's latent z only through the Student decoder, so
the latent can leave the data manifold along directions the decoder hides; loss values
do not show it. Measured on the generator step's own samples, without gradient:

  z_std          std of the generated latents (data: 1.0 for a normalised Student space)
  reencode_err   ||z - E_s(clamp(D_s(z)))|| / ||z||: how much of z the decoder does not show
  clipped        fraction of decoded pixels outside [-1, 1] (users see them clamped)
  bridge_drift   ||B(z) - R(z)|| / ||R(z)||, R the pixel round-trip E_t(up(clamp(D_s(z)))):
                 how far the learned Bridge strays from the exact map on generated
                 samples (compare with its held-out value on real images, stage 1)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from ..spaces import LatentSpace

KEYS = ("z_std", "reencode_err", "clipped", "bridge_drift")


def _rel(a: Tensor, b: Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-8)).item()


@torch.no_grad()
def reencoded(space: LatentSpace, z: Tensor, decoded: Tensor | None = None) -> Tensor:
    """E_s(clamp(D_s(z))): the latent of the image the decoder shows (`decoded`: D_s(z) if at hand)."""
    x = space.decode(z) if decoded is None else decoded
    return space.encode(x.clamp(-1, 1)).to(z.dtype)


@torch.no_grad()
def latent_diagnostics(z: Tensor, space: LatentSpace) -> dict[str, float]:
    """The generated Student latents' std, clipped pixels and re-encode error (each Bridge's
    drift: `bridge_drift`)."""
    x = space.decode(z)
    logs = {"z_std": z.float().std().item(), "clipped": (x.abs() > 1).float().mean().item()}
    logs["reencode_err"] = _rel(z, reencoded(space, z, x))
    return logs


@torch.no_grad()
def bridge_drift(z: Tensor, z_hat: Tensor, roundtrip: torch.nn.Module) -> float:
    """||B(z) - R(z)|| / ||R(z)||: how far the Bridge's output is from the exact pixel round-trip."""
    return _rel(z_hat, roundtrip(z))


def last_logged(history: Path) -> dict[str, float]:
    """These diagnostics at a run's last logged step (its history.jsonl), {} if none."""
    if not Path(history).exists():
        return {}
    rows = [json.loads(x) for x in Path(history).read_text().splitlines() if x.strip()]
    last = next((r for r in reversed(rows) if "z_std" in r), {})
    return {k: last[k] for k in KEYS if k in last}
