"""Data of a synthetic domain: an on-the-fly Dataset, in-memory scene banks, PNG export."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch.utils.data import Dataset

from ..data.images import to_tensor
from . import scene_rng

if TYPE_CHECKING:
    from . import Domain


class SceneDataset(Dataset):
    """Scene i of seed s is always the same; rendered when asked for.

    Returns (image in [-1, 1] at `size` px, prompt). With `prompts`, scene i uses
    prompt i % len(prompts); without, the domain draws one."""

    def __init__(self, domain: Domain, length: int, size: int = 64, seed: int = 0,
                 prompts: list[str] | None = None):
        self.domain, self.length, self.size, self.seed, self.prompts = domain, length, size, seed, prompts

    def __len__(self) -> int:
        return self.length

    def scene(self, i: int):
        prompt = self.prompts[i % len(self.prompts)] if self.prompts else None
        return self.domain.random_scene(scene_rng(self.seed, i), prompt)

    def __getitem__(self, i: int):
        scene = self.scene(i)
        return to_tensor(self.domain.render_at(scene, self.size)), scene.prompt


def scene_bank(domain: Domain, n: int, seed: int, progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """n rendered scenes at the domain's size (uint8, (n, size, size, 3)) and their prompts."""
    from tqdm.auto import tqdm

    ds = SceneDataset(domain, n, domain.size, seed)
    images = np.empty((n, domain.size, domain.size, 3), dtype=np.uint8)
    prompts = []
    for i in tqdm(range(n), desc=f"rendering {domain.name} scenes", disable=not progress):
        scene = ds.scene(i)
        images[i] = domain.render_at(scene, domain.size)
        prompts.append(scene.prompt)
    return images, prompts


def export(domain: Domain, n: int, size: int, out: Path, seed: int = 0) -> Path:
    """Write n scenes as PNGs plus manifest.jsonl ({file, prompt, seed, index, size, scene})."""
    from tqdm.auto import tqdm

    from ..io import write_images

    ds = SceneDataset(domain, n, size, seed)

    def renders():
        for i in tqdm(range(n), desc=f"exporting {size} px {domain.name} scenes"):
            scene = ds.scene(i)
            yield domain.render_at(scene, size), {"prompt": scene.prompt, "seed": seed, "index": i, "size": size,
                                                   **domain.scene_record(scene)}

    return write_images(out, renders(), digits=6)
