"""Generate images with any model the project knows, to PNGs plus manifest.jsonl.

Image k of the run uses its own seed (`seed + k`) for its initial noise, so a given
(prompt, seed) gives the same image whatever the batch size or the other prompts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .denoisers import Denoiser, load_denoiser
from .errors import CrossdistillError
from .io import atomic_dir


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


def read_prompts(path: Path) -> list[str]:
    """One prompt per line; blank lines ignored; UTF-8 required."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        raise CrossdistillError(f"prompts file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CrossdistillError(f"prompts file {path} is not UTF-8 (byte {e.start})") from None
    prompts = [ln.strip() for ln in lines if ln.strip()]
    if not prompts:
        raise CrossdistillError(f"prompts file {path} has no prompts")
    return prompts


def check_prompts(den: Denoiser, prompts: list[str]) -> None:
    if not prompts:
        raise CrossdistillError("no prompts given (use --prompt or --prompts-file)")
    if den.defaults.domain == "shapes":
        from .toy.shapes import parse_prompt
        for p in prompts:
            parse_prompt(p)


def initial_noise(den: Denoiser, seeds: list[int], resolution: int) -> torch.Tensor:
    shape = den.latent_shape(resolution, resolution)
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def generate(cfg: GenerateConfig, den: Denoiser | None = None, progress: bool = True) -> Path:
    from PIL import Image
    from tqdm.auto import tqdm

    from .toy.data import to_uint8

    if cfg.guidance is not None and cfg.guidance < 0:
        raise CrossdistillError(f"--guidance must be >= 0, got {cfg.guidance}")
    if cfg.n_per_prompt < 1:
        raise CrossdistillError(f"--n-per-prompt must be >= 1, got {cfg.n_per_prompt}")
    den = den or load_denoiser(cfg.model)
    check_prompts(den, cfg.prompts)
    if cfg.n_per_prompt < 1:
        raise CrossdistillError(f"--n-per-prompt must be >= 1, got {cfg.n_per_prompt}")
    res = cfg.resolution or den.defaults.resolution
    steps = cfg.steps or den.defaults.steps
    guidance = den.defaults.guidance if cfg.guidance is None else cfg.guidance
    if guidance < 0:
        raise CrossdistillError(f"--guidance must be >= 0, got {guidance}")
    jobs = [(p, cfg.seed + k) for k, p in enumerate(p for p in cfg.prompts for _ in range(cfg.n_per_prompt))]
    with atomic_dir(cfg.out, cfg.overwrite) as tmp, open(tmp / "manifest.jsonl", "w") as f:
        for start in tqdm(range(0, len(jobs), cfg.batch_size), desc=f"generating {len(jobs)} images",
                          disable=not progress):
            chunk = jobs[start:start + cfg.batch_size]
            prompts, seeds = [p for p, _ in chunk], [s for _, s in chunk]
            noise = initial_noise(den, seeds, res)
            z = den.sample(prompts, steps=steps, guidance=guidance, latents=noise, height=res, width=res)
            images = to_uint8(den.space.decode(z).float())
            for k, (img, (p, s)) in enumerate(zip(images, chunk)):
                name = f"{start + k:05d}.png"
                Image.fromarray(img).save(tmp / name)
                f.write(json.dumps({"file": name, "prompt": p, "seed": s, "model": str(cfg.model),
                                    "steps": steps, "guidance": guidance, "resolution": res}) + "\n")
    return Path(cfg.out)
