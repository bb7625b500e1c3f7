"""`crossdistill eval DIR`: score a folder of generations (PNGs + manifest.jsonl).

Models of a domain (metric `domain`, the default): the domain's prompt adherence and
image fidelity by image analysis, and domain FID against real renders of the same prompts
in the feature space of the domain's classifier; the domain is the one whose grammar
every prompt follows (`domains`). Real models (`metrics` fid / clip / hpsv2 / imagereward /
hpsv3, see `scale.py`): FID against a reference image folder, CLIP score and preference
scores. Both FIDs are `fid.frechet_distance` on `fid.moments` of the features; in the
same feature space, precision / recall / density / coverage (`prdc.py`) and the in-prompt
diversity (mean pairwise feature distance among one prompt's images).
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
    from ..data.images import to_tensor

    for i in range(0, len(images), size):
        yield torch.stack([to_tensor(im) for im in images[i:i + size]])


def infer_domain(prompts: list[str]):
    """The registered domain whose grammar every prompt follows; a clear error otherwise."""
    from ..domains import get, names

    errors = {}
    for name in names():
        dom = get(name)
        try:
            dom.check_prompts(sorted(set(prompts)))
            return dom
        except CrossdistillError as e:
            errors[name] = str(e)
    detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
    raise CrossdistillError(f"the prompts follow no domain's grammar ({detail}); "
                            f"for real models pass --metrics fid,clip --reference DIR")


def evaluate_domain(gens: Generations, classifier: str | None = None) -> dict:
    """Adherence, fidelity, failures and (with a feature network) domain FID."""
    from ..artifacts import resolve

    dom = infer_domain(gens.prompts)
    images = gens.images()
    metrics = {"domain": dom.name, "n_images": len(images), "n_prompts": len(set(gens.prompts))}
    metrics["adherence"] = dom.adherence(images, gens.prompts)
    metrics["fidelity"] = dom.fidelity(images)
    metrics["variety"] = dom.variety(images, gens.prompts)   # within-prompt spread of the free factors
    metrics["failures"] = dom.failures(images, gens.prompts)
    classifier = classifier or dom.classifier
    if classifier is not None:
        net = dom.feature_network(resolve(classifier))
        real = dom.reference_renders(gens.prompts, REFERENCE_SEED)
        metrics.update(feature_metrics(fidlib.features(_batches(images), net.features),
                                       fidlib.features(_batches(real), net.features), gens.prompts))
    return metrics


def feature_metrics(fake: torch.Tensor, real: torch.Tensor, prompts: list[str]) -> dict:
    """What a feature space says of generated images against real ones (row i of each: an
    image of prompts[i]): FID, precision / recall / density / coverage of the features and
    of their within-prompt residuals (`prdc.in_prompt_residuals`), and the in-prompt
    diversity."""
    from .prdc import K, in_prompt_diversity, in_prompt_residuals, prdc

    out = {"fid": fidlib.frechet_distance(*fidlib.moments(fake), *fidlib.moments(real))}
    if min(len(fake), len(real)) > K:
        out["prdc"] = prdc(real, fake)
    # `real` holds one render per generated image, of the same prompt: the same groups
    res_real, res_fake = in_prompt_residuals(real, prompts), in_prompt_residuals(fake, prompts)
    if len(res_fake) > K:
        out["prdc_in_prompt"] = prdc(res_real, res_fake)
    if len(set(prompts)) < len(prompts):   # some prompt has several images
        out["diversity"] = in_prompt_diversity(fake, prompts)
    return out


def evaluate(folder: Path, classifier: str | None = None, write: bool = True,
             metrics: list[str] | None = None, scale=None) -> dict:
    """Score one generations folder. `metrics`: names from `scale.METRICS` (default
    ["domain"]); `classifier`: the domain FID's feature network (default: the domain's);
    `scale`: a `scale.ScaleConfig` for the real-model metrics."""
    from dataclasses import replace

    from .scale import ScaleConfig, evaluate_scale

    wanted = metrics or ["domain"]
    gens = read_generations(folder)
    out: dict = {}
    if "domain" in wanted:
        out.update(evaluate_domain(gens, classifier))
    rest = tuple(m for m in wanted if m != "domain")
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
    keys = list(next(iter(rows.values()))["adherence"])   # the domain's attributes, then "all"
    spread = list(dict.fromkeys(k for m in rows.values() for k in m.get("variety", {})))   # the free factors
    t = Table(title=f"domain {next(iter(rows.values())).get('domain', '')}".strip(),
              caption="spread: each free factor's std over a prompt's images, mean over prompts; recall in prompt: "
                      "PRDC recall of the classifier features' within-prompt residuals" if spread else None)
    for col in ("run", "images", *keys, "clean", "bg level sd", *[f"spread {k}" for k in spread], "recall in prompt",
                "domain FID"):
        t.add_column(col, justify="left" if col == "run" else "right")
    for name, m in rows.items():
        a, v = m["adherence"], m.get("variety", {})
        t.add_row(name, str(m["n_images"]), *[f"{a.get(k, float('nan')):.3f}" for k in keys],
                  f"{m['fidelity']['clean']:.3f}" if "fidelity" in m else "-",
                  f"{m['fidelity']['bg_level_sd']:.1f}" if "bg_level_sd" in m.get("fidelity", {}) else "-",
                  *[f"{v[k]:.2f}" if k in v else "-" for k in spread],
                  f"{m['prdc_in_prompt']['recall']:.3f}" if "prdc_in_prompt" in m else "-",
                  f"{m['fid']:.2f}" if "fid" in m else "-")
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
