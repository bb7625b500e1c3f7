"""Latency: ms per image of a model's own sampler, denoiser calls + VAE decode, nothing else.

Prompts are encoded before the clock starts and the initial noise is drawn beforehand,
so a one-step Student is timed on exactly one denoiser call and one decode (the floor),
and a Teacher on its default sampler (its step count, CFG batch where the family uses
it) and one decode. Every figure of a comparison comes from the same process.
"""

from __future__ import annotations

import time

import torch

from ..denoisers import Denoiser, load_denoiser


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def ms_per_image(den: Denoiser, batch: int, repeats: int = 3, prompt: str = "a red circle at the top") -> float:
    """Best of `repeats` timed runs (after one warm-up) of sampling + decoding `batch` images."""
    res = den.defaults.resolution
    cond = den.encode_prompt([prompt] * batch)
    noise = torch.randn(batch, *den.latent_shape(res, res), generator=torch.Generator().manual_seed(0))

    def once():
        den.space.decode(den.sample(cond, latents=noise, height=res, width=res))

    once()
    best = float("inf")
    for _ in range(repeats):
        _sync(den.device)
        t0 = time.perf_counter()
        once()
        _sync(den.device)
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / batch


def bench(models: dict[str, str], batches: tuple[int, ...] = (1, 8), repeats: int = 3,
          reference: str | None = None) -> dict[str, dict]:
    """{label: {steps, ms_per_image_b<B>..., speedup_b<B> (vs `reference`)}} from one process."""
    rows = {}
    for label, source in models.items():
        den = load_denoiser(source)
        rows[label] = {"model": str(source), "steps": den.defaults.steps, "guidance": den.defaults.guidance}
        for b in batches:
            rows[label][f"ms_per_image_b{b}"] = round(ms_per_image(den, b, repeats), 2)
    ref = rows.get(reference) if reference else None
    if ref:
        for row in rows.values():
            for b in batches:
                row[f"speedup_b{b}"] = round(ref[f"ms_per_image_b{b}"] / row[f"ms_per_image_b{b}"], 1)
    return rows


def table(rows: dict[str, dict], batches: tuple[int, ...] = (1, 8)):
    from rich.table import Table

    t = Table(title="Latency (denoiser calls + decode, ms per image)")
    for c in ["model", "steps"] + [f"ms/img b={b}" for b in batches] + [f"speed-up b={b}" for b in batches]:
        t.add_column(c, justify="left" if c == "model" else "right")
    for label, r in rows.items():
        t.add_row(label, str(r["steps"]), *[f"{r[f'ms_per_image_b{b}']:.2f}" for b in batches],
                  *[f"{r[f'speedup_b{b}']:.1f}x" if f"speedup_b{b}" in r else "-" for b in batches])
    return t
