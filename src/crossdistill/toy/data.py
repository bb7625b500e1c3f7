"""Shapes-world data: an on-the-fly Dataset, in-memory scene banks, and PNG export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .shapes import Scene, random_scene, render, render_at


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene `index` of a dataset seeded `seed` (independent of order)."""
    return np.random.default_rng([seed, index])


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


class ShapesDataset(Dataset):
    """Scene i of seed s is always the same; rendered when asked for.

    Returns (image in [-1, 1] at `size` px, prompt). With `prompts`, scene i uses
    prompt i % len(prompts)."""

    def __init__(self, length: int, size: int = 64, seed: int = 0, prompts: list[str] | None = None):
        self.length, self.size, self.seed, self.prompts = length, size, seed, prompts

    def __len__(self) -> int:
        return self.length

    def scene(self, i: int) -> Scene:
        prompt = self.prompts[i % len(self.prompts)] if self.prompts else None
        return random_scene(scene_rng(self.seed, i), prompt)

    def __getitem__(self, i: int):
        scene = self.scene(i)
        return to_tensor(render_at(scene, self.size)), scene.prompt


def scene_bank(n: int, seed: int, progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """n rendered 64 px scenes (uint8, (n, 64, 64, 3)) and their prompts."""
    from tqdm.auto import tqdm

    ds = ShapesDataset(n, 64, seed)
    images = np.empty((n, 64, 64, 3), dtype=np.uint8)
    prompts = []
    for i in tqdm(range(n), desc="rendering scenes", disable=not progress):
        scene = ds.scene(i)
        images[i] = render(scene)
        prompts.append(scene.prompt)
    return images, prompts


def export(n: int, size: int, out: Path, seed: int = 0) -> Path:
    """Write n scenes as PNGs plus manifest.jsonl ({file, prompt, seed, index, ...})."""
    from PIL import Image
    from tqdm.auto import tqdm

    from ..io import atomic_dir

    ds = ShapesDataset(n, size, seed)
    with atomic_dir(out) as tmp:
        with open(tmp / "manifest.jsonl", "w") as f:
            for i in tqdm(range(n), desc=f"exporting {size} px scenes"):
                scene = ds.scene(i)
                name = f"{i:06d}.png"
                Image.fromarray(render_at(scene, size)).save(tmp / name)
                f.write(json.dumps({"file": name, "prompt": scene.prompt, "seed": seed, "index": i,
                                    "size": size, "radius": scene.radius, "dx": scene.dx, "dy": scene.dy,
                                    "gray": scene.gray}) + "\n")
    return out
