"""The shapes world's feature network: a small CNN trained to read colour, shape and
position from 32 px images. Its penultimate features define the domain FID (the same
Frechet code path as Inception features at real scale)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import CrossdistillError
from ..io import atomic_dir
from .shapes import COLORS, POSITIONS, SHAPES, parse_prompt

CONFIG = {"width": 32, "features": 64, "size": 32}


class ShapesClassifier(nn.Module):
    def __init__(self, width: int = 32, features: int = 64, size: int = 32):
        super().__init__()
        self.size = size
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, features, 3, stride=2, padding=1), nn.GELU(),
            nn.Flatten(), nn.Linear(features * (size // 8) ** 2, features), nn.GELU())
        self.heads = nn.ModuleDict({"color": nn.Linear(features, len(COLORS)),
                                    "shape": nn.Linear(features, len(SHAPES)),
                                    "position": nn.Linear(features, len(POSITIONS))})

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
        (path / "config.json").write_text(json.dumps(CONFIG))

    @classmethod
    def load(cls, path: Path) -> "ShapesClassifier":
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "model.safetensors").is_file():
            raise CrossdistillError(f"no classifier weights (model.safetensors) in {path}")
        net = cls(**json.loads((path / "config.json").read_text()))
        net.load_state_dict(load_file(str(path / "model.safetensors")))
        return net.eval().requires_grad_(False)


def labels(prompts: list[str]) -> dict[str, torch.Tensor]:
    parsed = [parse_prompt(p) for p in prompts]
    return {"color": torch.tensor([list(COLORS).index(c) for c, _, _ in parsed]),
            "shape": torch.tensor([SHAPES.index(s) for _, s, _ in parsed]),
            "position": torch.tensor([list(POSITIONS).index(p) for _, _, p in parsed])}


def train_classifier(bank: np.ndarray, prompts: list[str], cfg, out: Path) -> None:
    from .pretrain import _images, _log, lr_at

    st = cfg.classifier
    torch.manual_seed(cfg.seed)
    net = ShapesClassifier(**CONFIG).train()
    y = labels(prompts)
    opt = torch.optim.AdamW(net.parameters(), lr=st.lr)
    rng = np.random.default_rng([cfg.seed, 2])
    losses, t0 = [], time.time()
    bar = tqdm(range(st.steps), desc="classifier")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, st.steps, st.lr, cfg.decay_frac)
        idx = rng.integers(0, len(bank), st.batch)
        x = _images(bank, idx, 32)
        x = x + 0.05 * torch.randn_like(x)   # robustness to generator noise
        out_ = net(x)
        loss = sum(F.cross_entropy(out_[k], y[k][idx]) for k in out_)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    net.eval()
    from .data import scene_bank

    held, held_prompts = scene_bank(1000, cfg.seed + 7, progress=False)   # unseen scenes
    with torch.no_grad():
        pred = net(_images(held, np.arange(len(held)), 32))
        yh = labels(held_prompts)
        acc = {k: float((pred[k].argmax(-1) == yh[k]).float().mean()) for k in pred}
    with atomic_dir(out, overwrite=True) as tmp:
        net.save(tmp)
        _log(tmp, "classifier", cfg, t0, losses, {"accuracy_1000_heldout_scenes": acc})
