"""Generate images with any model the project knows, to PNGs plus manifest.jsonl.

Image k of the run uses its own seed (`seed + k`) for its initial noise, so a given
(prompt, seed) gives the same image whatever the batch size or the other prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .data.sources import check_prompts
from .denoisers import Denoiser, load_denoiser
from .errors import CrossdistillError
from .io import write_images


@dataclass
class GenerateConfig:
    model: str
    prompts: list[str]
    out: Path
    steps: int | None = None          # model default if None
    guidance: float | None = None     # model default if None
    n_per_prompt: int = 1
    seed: int = 0
    batch_size: int = 16
    resolution: int | None = None     # model default if None
    overwrite: bool = False


def initial_noise(den: Denoiser, seeds: list[int], resolution: int) -> torch.Tensor:
    shape = den.latent_shape(resolution, resolution)
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def generate(cfg: GenerateConfig, den: Denoiser | None = None, progress: bool = True) -> Path:
    from tqdm.auto import tqdm

    from .data.images import to_uint8

    if cfg.n_per_prompt < 1:
        raise CrossdistillError(f"--n-per-prompt must be >= 1, got {cfg.n_per_prompt}")
    if cfg.guidance is not None and cfg.guidance < 0:
        raise CrossdistillError(f"--guidance must be >= 0, got {cfg.guidance}")
    den = den or load_denoiser(cfg.model)
    check_prompts(den, cfg.prompts)
    res = cfg.resolution or den.defaults.resolution
    steps = cfg.steps or den.defaults.steps
    guidance = den.defaults.guidance if cfg.guidance is None else cfg.guidance
    jobs = [(p, cfg.seed + k) for k, p in enumerate(p for p in cfg.prompts for _ in range(cfg.n_per_prompt))]

    def images():
        for start in tqdm(range(0, len(jobs), cfg.batch_size), desc=f"generating {len(jobs)} images",
                          disable=not progress):
            chunk = jobs[start:start + cfg.batch_size]
            prompts, seeds = [p for p, _ in chunk], [s for _, s in chunk]
            z = den.sample(prompts, steps=steps, guidance=guidance, latents=initial_noise(den, seeds, res),
                           height=res, width=res)
            for img, (p, s) in zip(to_uint8(den.space.decode(z).float()), chunk):
                yield img, {"prompt": p, "seed": s}

    return write_images(cfg.out, images(), {"model": str(cfg.model), "steps": steps, "guidance": guidance,
                                            "resolution": res}, cfg.overwrite)
