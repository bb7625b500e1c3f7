"""Stage-2 losses (docs/design.md, "Stage 2"; Yin et al. 2024, DMD2). Each takes explicit
tensors and returns (loss, logs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dmd_generator_loss(z_hat: Tensor, x0_real: Tensor, x0_fake: Tensor,
                       floor: float = 1e-4) -> tuple[Tensor, dict[str, float]]:
    """Distribution matching: the generator moves along g = (fake - real) / w, where
    w = mean |z_hat - real| per sample over channels and pixels (DMD eq. 8 weighting),
    floored, with non-finite entries zeroed. Implemented as 0.5 ||z_hat - sg(z_hat - g)||^2
    so that d loss / d z_hat = g / numel."""
    with torch.no_grad():
        dims = tuple(range(1, z_hat.ndim))
        w = (z_hat.float() - x0_real.float()).abs().mean(dim=dims, keepdim=True).clamp_min(floor)
        gap = x0_fake.float() - x0_real.float()   # how far the two scores disagree about these samples
        grad = torch.nan_to_num(gap / w, nan=0.0, posinf=0.0, neginf=0.0)
        target = z_hat.float() - grad
    loss = 0.5 * F.mse_loss(z_hat.float(), target)
    return loss, {"dmd": loss.item(), "dmd_grad_norm": grad.norm().item() / z_hat.shape[0],
                  "dmd_weight": w.mean().item(),   # |z_hat - real|: the normaliser
                  "dmd_x0_gap": gap.abs().mean().item()}   # |fake - real| at these times, in clean-latent units


@torch.no_grad()
def dmd_disagreement(x0_real: Tensor, x0_fake: Tensor, alpha: Tensor, sigma: Tensor, units: str = "eps") -> Tensor:
    """Per sample, how far the fake and the real score disagree: the mean |x0_fake - x0_real|
    in clean-image units (`units="x0"`), or in noise units (`"eps"`): the mean
    |eps_fake - eps_real| = alpha |x0_fake - x0_real| / sigma at x_t = alpha x0 + sigma eps
    (the noise predictions' gap, the quantity an epsilon loss weighs alike at every time).
    Not the normalised DMD gradient: DMD divides each sample's gradient by
    |z_hat - x0_real|, and since the fake score predicts the generator's own samples,
    |x0_fake - x0_real| / |z_hat - x0_real| is ~1 at every time (measured: a rule on it
    stayed uniform). `alpha`, `sigma`: per sample, broadcastable. Non-finite rows read 0."""
    dims = tuple(range(1, x0_real.ndim))
    d = (x0_fake.float() - x0_real.float()).abs().mean(dim=dims)
    if units == "eps":
        d = d * (alpha.float() / sigma.float().clamp_min(1e-6)).flatten()
    elif units != "x0":
        raise ValueError(f"units={units!r}; allowed: eps, x0")
    return torch.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)


def reencode_loss(z: Tensor, z_reencoded: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Keeps generator latents on the Student VAE's manifold: ||z - sg(E_s(clamp(D_s(z))))||^2,
    mean over elements. The decoder ignores some latent directions (its null space); DMD's
    gradient, which reaches z only through the decoder, leaves them free to drift, and a
    real VAE decodes drifted latents to noise. The re-encoded latent is what the decoder
    shows, so this pulls the invisible part back toward it."""
    loss = (z.float() - z_reencoded.detach().float()).pow(2).mean()
    return loss, {"manifold": loss.item()}


def latent_std_loss(z: Tensor, target: float = 1.0) -> tuple[Tensor, dict[str, float]]:
    """A latent-statistics penalty: (std(z_i) - target)^2 per sample, averaged (the Student's
    latents are normalised to unit std)."""
    std = z.float().flatten(1).std(dim=1)
    loss = (std - target).pow(2).mean()
    return loss, {"manifold": loss.item()}


def gan_discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> tuple[Tensor, dict[str, float]]:
    """DMD2's GAN term for the classifier head on the fake score (non-saturating logistic):
    softplus(-D(real)) + softplus(D(fake)), averaged."""
    loss = F.softplus(-logits_real.float()).mean() + F.softplus(logits_fake.float()).mean()
    return loss, {"gan_d": loss.item(), "d_real": torch.sigmoid(logits_real.float()).mean().item(),
                  "d_fake": torch.sigmoid(logits_fake.float()).mean().item()}


def gan_generator_loss(logits_fake: Tensor) -> tuple[Tensor, dict[str, float]]:
    """The generator's side: softplus(-D(G(z)))."""
    loss = F.softplus(-logits_fake.float()).mean()
    return loss, {"gan_g": loss.item()}
