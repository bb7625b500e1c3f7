"""One table for several Bridges (and the round-trip baseline) on the same held-out images."""

from __future__ import annotations

from pathlib import Path

from ..denoisers import load_denoiser
from .evaluate import evaluate_bridge
from .model import Bridge, BridgeConfig
from .stage1 import DataConfig, encode_pairs, load_bridge, load_images

HELD_OUT_SEED = 777   # never the stage-1 training seed


def evaluate_runs(runs: list[Path], teacher: str, student: str, images: int = 540,
                  roundtrip: bool = True) -> dict[str, dict]:
    t, s = load_denoiser(teacher), load_denoiser(student)
    s_res, t_res = s.defaults.resolution, t.defaults.resolution
    imgs, prompts = load_images(DataConfig(images=images), t, t_res, images, HELD_OUT_SEED)
    bank = encode_pairs(imgs, prompts, s, t, s_res, t_res, keep_images=True)
    rows = {}
    for run in runs:
        run = Path(run)
        folder = run / "bridge" if (run / "bridge" / "bridge.json").is_file() else run
        rows[run.name] = evaluate_bridge(load_bridge(folder, s, t), t, bank)
    if roundtrip:
        rows["round-trip"] = evaluate_bridge(Bridge(s.space, t.space, s_res, t_res, BridgeConfig("roundtrip")),
                                             t, bank)
    return rows


def table(rows: dict[str, dict]):
    from rich.table import Table

    cols = ["latent_mse", "roundtrip_drift", "attn_error"] + sorted(k for k in next(iter(rows.values())) if k.startswith("x0_mse"))
    t = Table(title="Bridge, stage-1 evaluation (held-out)")
    t.add_column("bridge")
    for c in cols + ["psnr", "adherence (all)"]:
        t.add_column(c, justify="right")
    for name, m in rows.items():
        t.add_row(name, *[f"{m[c]:.4f}" for c in cols], f"{m.get('psnr', float('nan')):.2f}",
                  f"{m['adherence']['all']:.3f}" if "adherence" in m else "-")
    return t
