"""A synthetic domain's feature network: a small CNN that reads the attributes of a
prompt (one head per attribute the domain labels) from 32 px images (trained by
`pretrain.train_classifier`). Its penultimate features define the domain FID (the same
Frechet code path as Inception features at real scale)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CrossdistillError

CONFIG = {"width": 32, "features": 64, "size": 32}


class DomainClassifier(nn.Module):
    def __init__(self, heads: dict[str, int], width: int = 32, features: int = 64, size: int = 32):
        super().__init__()
        self.size = size
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, features, 3, stride=2, padding=1), nn.GELU(),
            nn.Flatten(), nn.Linear(features * (size // 8) ** 2, features), nn.GELU())
        self.config = {"heads": dict(heads), "width": width, "features": features, "size": size}
        self.heads = nn.ModuleDict({k: nn.Linear(features, n) for k, n in heads.items()})

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        """Any size in [-1, 1] -> 32 px (area averaging, like the spec's 32 px images)."""
        if x.shape[-1] != self.size:
            x = F.adaptive_avg_pool2d(x, self.size)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self._prep(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: h(f) for k, h in self.heads.items()}

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file(self.state_dict(), str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps(self.config))

    @classmethod
    def load(cls, path: Path, heads: dict[str, int] | None = None) -> "DomainClassifier":
        """From a folder; `heads`: for a config.json that predates recording them."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "model.safetensors").is_file():
            raise CrossdistillError(f"no classifier weights (model.safetensors) in {path}")
        config = json.loads((path / "config.json").read_text())
        if "heads" not in config:
            if heads is None:
                raise CrossdistillError(f"{path / 'config.json'} does not name the classifier's heads")
            config["heads"] = heads
        net = cls(**config)
        net.load_state_dict(load_file(str(path / "model.safetensors")))
        return net.eval().requires_grad_(False)
