"""Stage-1 evaluation on held-out images: how well does a Bridge stand in for E_t?

  latent_mse        || B(z_s) - E_t(x) ||^2
  roundtrip_drift   || B(z_s) - R(z_s) || / || R(z_s) ||, R the pixel round-trip E_t(up(clamp(D_s(z_s)))):
                    stage 2 logs the same quantity on generated samples (`bridge_drift`)
  attn_error        Teacher attention-map row L1 distance, bridged vs true latent
                    (same noise, fixed timesteps), mean over layers and timesteps
  object_attn_error (domains that name objects) the same maps read per object: the
                    attention its words' tokens get at each image position, normalised;
                    L1 in [0, 2], bridged vs true, mean over objects, layers, timesteps
  x0_mse@t          Teacher x0 prediction agreement, bridged vs true latent, per t
  psnr              Teacher-decoded bridged latent vs the image (dB, range [-1, 1])
  adherence         (models of a domain) the domain's judge on the Teacher-decoded bridged latents

`evaluate_runs` puts several Bridges (and the round-trip baseline) in one table, on the
same held-out images.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from ..attention import AttentionCapture, noised_maps
from ..data.images import to_uint8
from ..data.banks import MemoryBank, encode_latents
from ..data.sources import DataConfig, domain_of, load_images
from ..domains import get as get_domain
from ..denoisers import Denoiser, load_denoiser
from .io import load_bridge
from ..errors import CrossdistillError
from .losses import AttnConfig, map_distance, object_map_distance
from .model import Bridge, BridgeConfig

FRACTIONS = (0.25, 0.5, 0.75, 0.95)
HELD_OUT_SEED = 777   # never the stage-1 training seed


def object_masks(teacher: Denoiser, prompts: list[str], domain, length: int) -> Tensor | None:
    """(n, G, length) masks of each prompt's G objects on the Teacher's text tokens, or None
    when the domain names no objects or the family cannot place words on tokens."""
    if domain is None:
        return None
    rows = {}
    for p in sorted(set(prompts)):
        groups = domain.object_words(p)
        if groups is None:
            return None
        try:
            pos = teacher.word_positions(p)
        except CrossdistillError:
            return None
        m = torch.zeros(len(groups), length)
        for g, words in enumerate(groups):
            tokens = [i for w in words for i in pos[w]]
            if not tokens:   # e.g. no tokenizer loaded, or truncated away: no map to read
                return None
            m[g, tokens] = 1.0
        rows[p] = m
    if len({m.shape[0] for m in rows.values()}) != 1:
        raise CrossdistillError("per-object attention needs the same number of objects in every prompt")
    return torch.stack([rows[p] for p in prompts])


@torch.no_grad()
def evaluate_bridge(bridge: Bridge, teacher: Denoiser, bank: MemoryBank, attn: AttnConfig | None = None,
                    fractions=FRACTIONS, batch: int = 60, seed: int = 0, domain=None) -> dict:
    """`domain`: whose judge reads the decoded images (default: the Teacher's domain, if any)."""
    attn = attn or AttnConfig()
    table, rows = teacher.encode_table(bank.prompts)
    domain = domain or domain_of(teacher)
    length = table.embeds.shape[1]
    masks = object_masks(teacher, bank.prompts, domain, length)
    keys = teacher.caption_mask(bank.prompts, length) if attn.tokens == "caption" else None
    g = torch.Generator().manual_seed(seed)
    n = len(bank.z_s)
    sums = {"latent_mse": 0.0, "attn_error": 0.0, "psnr": 0.0, **{f"x0_mse@{f}": 0.0 for f in fractions}}
    if masks is not None:
        sums["object_attn_error"] = 0.0
    roundtrip = Bridge(bridge.student, bridge.teacher, bridge.student_res, bridge.teacher_res, BridgeConfig("roundtrip"))
    drift_num = drift_den = 0.0
    decoded = []
    for i in range(0, n, batch):
        idx = torch.arange(i, min(i + batch, n))
        z_s = bank.z_s[idx].to(teacher.device)
        z_t = bank.z_t[idx].to(teacher.device, teacher.dtype)
        pred = bridge(z_s)
        cond = table.index(rows[idx])
        k = len(idx)
        sums["latent_mse"] += (pred - z_t).pow(2).mean().item() * k
        r = roundtrip(z_s)
        drift_num, drift_den = drift_num + (pred - r).pow(2).sum().item(), drift_den + r.pow(2).sum().item()
        err = obj = 0.0
        for f in fractions:
            t = teacher.time_at(torch.full((k,), f))
            noise = torch.randn(z_t.shape, generator=g)
            x0_true = teacher.predict_x0(teacher.add_noise(z_t, t, noise), t, cond, guidance=1.0)
            x0_pred = teacher.predict_x0(teacher.add_noise(pred, t, noise), t, cond, guidance=1.0)
            sums[f"x0_mse@{f}"] += (x0_pred - x0_true).pow(2).mean().item() * k
            with AttentionCapture(teacher, attn.spec()) as cap:
                ref = noised_maps(teacher, cap, z_t, t, noise, cond)
                got = noised_maps(teacher, cap, pred, t, noise, cond)
            layers = [map_distance(got[l][gname], ref[l][gname], "l1",
                                   keys[idx] if gname == "text" and keys is not None else None).item()
                      for l in got for gname in got[l]]
            err += sum(layers) / len(layers)
            if masks is not None:
                objs = [object_map_distance(got[l]["text"], ref[l]["text"], masks[idx]).item()
                        for l in got if "text" in got[l]]
                obj += sum(objs) / len(objs)
        sums["attn_error"] += err / len(fractions) * k
        if masks is not None:
            sums["object_attn_error"] += obj / len(fractions) * k
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
    if domain is not None:
        out["adherence"] = domain.adherence(list(to_uint8(torch.cat(decoded))), bank.prompts)
    return out


def evaluate_runs(runs: list[Path], teacher: str, student: str, images: int = 540,
                  roundtrip: bool = True, domain: str | None = None) -> dict[str, dict]:
    """Every Bridge (and the round-trip) on the same held-out renders of `domain` (default:
    the Teacher's domain)."""
    t, s = load_denoiser(teacher), load_denoiser(student)
    s_res, t_res = s.defaults.resolution, t.defaults.resolution
    imgs, prompts = load_images(DataConfig(images=images, domain=domain), t, t_res, images, HELD_OUT_SEED)
    bank = encode_latents(imgs, prompts, s, t, s_res, t_res, keep_images=True)
    judge = get_domain(domain) if domain is not None else None
    rows = {}
    for run in runs:
        run = Path(run)
        folder = run / "bridge" if (run / "bridge" / "bridge.json").is_file() else run
        rows[run.name] = evaluate_bridge(load_bridge(folder, s, t), t, bank, domain=judge)
    if roundtrip:
        rows["round-trip"] = evaluate_bridge(Bridge(s.space, t.space, s_res, t_res, BridgeConfig("roundtrip")),
                                             t, bank, domain=judge)
    return rows


def table(rows: dict[str, dict]):
    from rich.table import Table

    first = next(iter(rows.values()))
    cols = ["latent_mse", "roundtrip_drift", "attn_error", "object_attn_error"]
    cols = [c for c in cols if c in first] + sorted(k for k in first if k.startswith("x0_mse"))
    t = Table(title="Bridge, stage-1 evaluation (held-out)")
    t.add_column("bridge")
    for c in cols + ["psnr", "adherence (all)"]:
        t.add_column(c, justify="right")
    for name, m in rows.items():
        t.add_row(name, *[f"{m[c]:.4f}" for c in cols], f"{m.get('psnr', float('nan')):.2f}",
                  f"{m['adherence']['all']:.3f}" if "adherence" in m else "-")
    return t
