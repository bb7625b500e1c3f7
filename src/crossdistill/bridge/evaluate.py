"""Stage-1 evaluation on held-out images: how well does a Bridge stand in for E_t?

  latent_mse        || B(z_s) - E_t(x) ||^2
  roundtrip_drift   || B(z_s) - R(z_s) || / || R(z_s) ||, R the pixel round-trip E_t(up(clamp(D_s(z_s)))):
                    stage 2 logs the same quantity on generated samples (`bridge_drift`)
  attn_error        Teacher attention-map row L1 distance, bridged vs true latent
                    (same noise, fixed timesteps), mean over layers and timesteps
  x0_mse@t          Teacher x0 prediction agreement, bridged vs true latent, per t
  psnr              Teacher-decoded bridged latent vs the image (dB, range [-1, 1])
  adherence         (shapes world) judged on the Teacher-decoded bridged latents
"""

from __future__ import annotations

import math

import torch

from ..attention import AttentionCapture
from ..denoisers import Denoiser
from .losses import map_distance
from .model import Bridge, BridgeConfig
from .stage1 import AttnConfig, PairBank, teacher_maps

FRACTIONS = (0.25, 0.5, 0.75, 0.95)


@torch.no_grad()
def evaluate_bridge(bridge: Bridge, teacher: Denoiser, bank: PairBank, attn: AttnConfig | None = None,
                    fractions=FRACTIONS, batch: int = 60, seed: int = 0) -> dict:
    attn = attn or AttnConfig()
    table, rows = teacher.encode_table(bank.prompts)
    g = torch.Generator().manual_seed(seed)
    n = len(bank.z_s)
    sums = {"latent_mse": 0.0, "attn_error": 0.0, "psnr": 0.0, **{f"x0_mse@{f}": 0.0 for f in fractions}}
    roundtrip = Bridge(bridge.student, bridge.teacher, bridge.student_res, bridge.teacher_res, BridgeConfig("roundtrip"))
    drift_num = drift_den = 0.0
    decoded = []
    for i in range(0, n, batch):
        idx = torch.arange(i, min(i + batch, n))
        z_t, pred = bank.z_t[idx], bridge(bank.z_s[idx])
        cond = table.index(rows[idx])
        k = len(idx)
        sums["latent_mse"] += (pred - z_t).pow(2).mean().item() * k
        r = roundtrip(bank.z_s[idx])
        drift_num, drift_den = drift_num + (pred - r).pow(2).sum().item(), drift_den + r.pow(2).sum().item()
        err = 0.0
        for f in fractions:
            t = teacher.time_at(torch.full((k,), f))
            noise = torch.randn(z_t.shape, generator=g)
            x0_true = teacher.predict_x0(teacher.add_noise(z_t, t, noise), t, cond, guidance=1.0)
            x0_pred = teacher.predict_x0(teacher.add_noise(pred, t, noise), t, cond, guidance=1.0)
            sums[f"x0_mse@{f}"] += (x0_pred - x0_true).pow(2).mean().item() * k
            with AttentionCapture(teacher, attn.spec()) as cap:
                ref = teacher_maps(teacher, cap, z_t, t, noise, cond)
                got = teacher_maps(teacher, cap, pred, t, noise, cond)
            layers = [map_distance(got[l][gname], ref[l][gname]).item() for l in got for gname in got[l]]
            err += sum(layers) / len(layers)
        sums["attn_error"] += err / len(fractions) * k
        img = teacher.space.decode(pred).clamp(-1, 1)
        decoded.append(img)
        if bank.images is not None:
            ref_img = bank.images[idx]
            if ref_img.shape[-1] != img.shape[-1]:
                ref_img = torch.nn.functional.interpolate(ref_img, size=img.shape[-2:], mode="area")
            mse = (img - ref_img).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
            sums["psnr"] += (10 * torch.log10(4 / mse)).sum().item()
    out = {k: v / n for k, v in sums.items()}
    out["roundtrip_drift"] = math.sqrt(drift_num / max(drift_den, 1e-12))
    if bank.images is None:
        out.pop("psnr")
    if teacher.defaults.domain == "shapes":
        from ..toy.data import to_uint8
        from ..toy.judge import adherence

        out["adherence"] = adherence(list(to_uint8(torch.cat(decoded))), bank.prompts)
    return out
