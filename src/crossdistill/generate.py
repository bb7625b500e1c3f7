"""Generate images with any model the project knows, to PNGs plus manifest.jsonl.

Image k of the run uses its own seed (`seed + k`) for its initial noise, so a given
(prompt, seed) gives the same image whatever the batch size or the other prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checks import DTYPE, GUIDANCE, IMAGES, SAMPLING_STEPS, SEED, SIZE, Checked, accepts
from .data.sources import check_prompts
from .denoisers import Denoiser, load_denoiser
from .errors import CrossdistillError
from .io import write_images

if TYPE_CHECKING:
    import numpy as np


@dataclass
class GenerateConfig(Checked):   # the CLI's flags declare the same ranges (cli/options.py)
    model: str
    prompts: list[str]
    out: Path
    steps: int | None = accepts(None, **SAMPLING_STEPS)   # model default if None
    guidance: float | None = accepts(None, **GUIDANCE)    # model default if None
    n_per_prompt: int = accepts(1, **IMAGES)
    seed: int = accepts(0, **SEED)
    batch_size: int = accepts(16, **IMAGES)
    height: int | None = accepts(None, **SIZE)            # model default resolution if None
    width: int | None = accepts(None, **SIZE)
    overwrite: bool = False
    device: str = accepts("auto", nonempty=True)   # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    dtype: str = accepts("auto", **DTYPE)          # auto (fp16 on a GPU, fp32 on the CPU) | fp32 | fp16 | bf16


def load_for_inference(model: str, device: str = "auto", dtype: str = "auto") -> Denoiser:
    """A model on the device and in the dtype `--device` / `--dtype` name (runtime.py)."""
    from .runtime import pick_device, pick_dtype

    dev = pick_device(device)
    return load_denoiser(model, dtype=pick_dtype(dtype, dev), device=dev)


@torch.no_grad()
def draw(den: Denoiser, prompts: list[str], seeds: list[int], steps: int, guidance: float, height: int,
         width: int) -> "np.ndarray":
    """uint8 (B, H, W, 3) images of `prompts`, image k from its own generator seeded
    `seeds[k]`: its initial noise, then any noise the sampler draws (a few-step Student's
    re-noising), as diffusers does with `generator=[torch.Generator().manual_seed(s) ...]`.
    What `generate` writes and `crossdistill app` serves."""
    from .data.images import to_uint8

    gens = [torch.Generator().manual_seed(s) for s in seeds]
    shape = den.latent_shape(height, width)
    latents = torch.stack([torch.randn(shape, generator=g) for g in gens])
    z = den.sample(prompts, steps=steps, guidance=guidance, latents=latents, generator=gens,
                   height=height, width=width)
    return to_uint8(den.space.decode(z).float())


@torch.no_grad()
def generate(cfg: GenerateConfig, den: Denoiser | None = None, progress: bool = True) -> Path:
    from tqdm.auto import tqdm

    if cfg.n_per_prompt < 1:
        raise CrossdistillError(f"--n-per-prompt must be >= 1, got {cfg.n_per_prompt}")
    if cfg.guidance is not None and cfg.guidance < 0:
        raise CrossdistillError(f"--guidance must be >= 0, got {cfg.guidance}")
    den = den or load_for_inference(cfg.model, cfg.device, cfg.dtype)
    check_prompts(den, cfg.prompts)
    height = cfg.height or den.defaults.resolution
    width = cfg.width or den.defaults.resolution
    den.latent_shape(height, width)   # a bad size is refused before any work
    steps = cfg.steps or den.defaults.steps
    guidance = den.defaults.guidance if cfg.guidance is None else cfg.guidance
    jobs = [(p, cfg.seed + k) for k, p in enumerate(p for p in cfg.prompts for _ in range(cfg.n_per_prompt))]

    def images():
        for start in tqdm(range(0, len(jobs), cfg.batch_size), desc=f"generating {len(jobs)} images",
                          disable=not progress):
            chunk = jobs[start:start + cfg.batch_size]
            prompts, seeds = [p for p, _ in chunk], [s for _, s in chunk]
            for img, (p, s) in zip(draw(den, prompts, seeds, steps, guidance, height, width), chunk):
                yield img, {"prompt": p, "seed": s}

    return write_images(cfg.out, images(), {"model": str(cfg.model), "steps": steps, "guidance": guidance,
                                            "height": height, "width": width, "device": str(den.device),
                                            "dtype": str(den.dtype).removeprefix("torch.")}, cfg.overwrite)
