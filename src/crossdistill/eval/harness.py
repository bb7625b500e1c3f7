"""`crossdistill eval DIR`: score a folder of generations (PNGs + manifest.jsonl).

Shapes world (the default): prompt adherence (colour, shape, position, all three) by
image analysis, and domain FID against real renders of the same prompts, in the feature
space of the shapes classifier. Real models (`metrics` fid / clip / hpsv2 / imagereward /
hpsv3, see `scale.py`): FID against a reference image folder, CLIP score and preference
scores. Both FIDs are `fid.frechet_distance` on `fid.feature_stats`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CrossdistillError
from . import fid as fidlib

REFERENCE_SEED = 1_000_003   # real renders for FID never share seeds with training or export


@dataclass
class Generations:
    folder: Path
    rows: list[dict]

    @property
    def prompts(self) -> list[str]:
        return [r["prompt"] for r in self.rows]

    def images(self) -> list[np.ndarray]:
        from .scale import read_rgb

        return [read_rgb(self.folder / r["file"]) for r in self.rows]


def read_generations(folder: Path) -> Generations:
    folder = Path(folder)
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise CrossdistillError(f"{folder} has no manifest.jsonl (make one with `crossdistill generate`)")
    rows = []
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise CrossdistillError(f"{manifest}:{n} is not valid JSON") from None
        if not {"file", "prompt"} <= set(row):
            raise CrossdistillError(f"{manifest}:{n} lacks 'file' or 'prompt'")
        if not (folder / row["file"]).is_file():
            raise CrossdistillError(f"{manifest}:{n} names missing image {row['file']}")
        rows.append(row)
    if not rows:
        raise CrossdistillError(f"{manifest} lists no images")
    return Generations(folder, rows)


def _batches(images: list[np.ndarray], size: int = 256):
    from ..toy.data import to_tensor

    for i in range(0, len(images), size):
        yield torch.stack([to_tensor(im) for im in images[i:i + size]])


def shapes_reference(prompts: list[str], seed: int = REFERENCE_SEED) -> list[np.ndarray]:
    """Real 64 px renders, one per prompt occurrence (same prompt distribution)."""
    from ..toy.data import ShapesDataset
    from ..toy.shapes import render

    ds = ShapesDataset(len(prompts), 64, seed, prompts)
    return [render(ds.scene(i)) for i in range(len(prompts))]


def evaluate_shapes(gens: Generations, classifier: str = "shapes-classifier") -> dict:
    from ..artifacts import resolve
    from ..toy.classifier import ShapesClassifier
    from ..toy.judge import adherence, failures, fidelity

    images = gens.images()
    metrics = {"n_images": len(images), "n_prompts": len(set(gens.prompts))}
    metrics["adherence"] = adherence(images, gens.prompts)
    metrics["fidelity"] = fidelity(images)
    metrics["failures"] = failures(images, gens.prompts)
    net = ShapesClassifier.load(resolve(classifier))
    real = shapes_reference(gens.prompts)
    metrics["fid"] = fidlib.fid(_batches(images), _batches(real), net.features)
    return metrics


def evaluate(folder: Path, classifier: str = "shapes-classifier", write: bool = True,
             metrics: list[str] | None = None, scale=None) -> dict:
    """Score one generations folder. `metrics`: names from `scale.METRICS` (default
    ["shapes"]); `scale`: a `scale.ScaleConfig` for the real-model metrics."""
    from dataclasses import replace

    from .scale import ScaleConfig, evaluate_scale

    wanted = metrics or ["shapes"]
    gens = read_generations(folder)
    out: dict = {}
    if "shapes" in wanted:
        from ..toy.shapes import parse_prompt

        for p in set(gens.prompts):
            try:
                parse_prompt(p)
            except CrossdistillError as e:
                raise CrossdistillError(f"{e}; for real models pass --metrics fid,clip --reference DIR") from None
        out.update(evaluate_shapes(gens, classifier))
    rest = tuple(m for m in wanted if m != "shapes")
    if rest:
        out.update(evaluate_scale([gens.folder / r["file"] for r in gens.rows], gens.prompts,
                                  replace(scale or ScaleConfig(), metrics=rest)))
        out.setdefault("n_images", len(gens.rows))
        out.setdefault("n_prompts", len(set(gens.prompts)))
    out["folder"] = str(folder)
    if write:
        from ..io import atomic_file

        with atomic_file(Path(folder) / "metrics.json") as tmp:
            tmp.write_text(json.dumps(out, indent=1))
    return out


def table(rows: dict[str, dict]) -> "rich.table.Table":
    from rich.table import Table

    if not all("adherence" in m for m in rows.values()):
        return scale_table(rows)
    t = Table(title="shapes world")
    for col in ("run", "images", "color", "shape", "position", "all three", "clean", "domain FID"):
        t.add_column(col, justify="left" if col == "run" else "right")
    for name, m in rows.items():
        a = m["adherence"]
        t.add_row(name, str(m["n_images"]), f"{a['color']:.3f}", f"{a['shape']:.3f}", f"{a['position']:.3f}",
                  f"{a['all']:.3f}", f"{m['fidelity']['clean']:.3f}" if "fidelity" in m else "-", f"{m['fid']:.2f}")
    return t


def scale_table(rows: dict[str, dict]) -> "rich.table.Table":
    """Real-model metrics: one column per numeric metric any row has."""
    from rich.table import Table

    cols = list(dict.fromkeys(k for m in rows.values() for k, v in m.items()
                              if isinstance(v, float) or k.startswith("n_")))
    t = Table(title="generations")
    t.add_column("run")
    for c in cols:
        t.add_column(c, justify="right")
    for name, m in rows.items():
        t.add_row(name, *[f"{m[c]:.4g}" if isinstance(m.get(c), float) else str(m.get(c, "")) for c in cols])
    return t
