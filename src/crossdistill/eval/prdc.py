"""Distribution-level fidelity and variety in a feature space, with no domain knowledge.

Precision and recall (Kynkäänniemi et al. 2019): the share of generated samples inside the
real manifold, and of real samples inside the generated one, each manifold the union of
balls reaching every sample's k-th nearest neighbour. Density and coverage (Naeem et al.
2020): how many real balls hold a generated sample on average (/ k), and the share of real
balls holding at least one. A generator whose seed does nothing covers one point of the
real distribution: its recall and coverage fall toward 0.

The same quantities as the authors' reference code (`prdc.compute_prdc`, the test's
oracle), computed in chunks of rows in torch: memory grows as N x chunk, not N^2, so 50k
Inception features fit, on a GPU when there is one.

Over a domain's prompts x a few images each, the classifier's features cluster by prompt:
a collapsed generator still puts one sample in every prompt's cluster, and plain recall
and coverage stay near 1 (measured on the shapes world: 0.99 for the same image four times
per prompt, 1.0 for renders). `in_prompt_residuals` removes each prompt's mean feature
from its images (real and generated alike), so that PRDC of the residuals compares the
spread a prompt leaves open: the same image four times scores recall 0 there.

`in_prompt_diversity`: the mean pairwise feature distance among one prompt's images,
averaged over prompts (a collapsed generator: 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

K = 5   # Naeem et al.'s default neighbourhood size
CHUNK = 2048


def _dist(a: Tensor, b: Tensor) -> Tensor:
    # not the matmul path: equal rows are exactly 0 apart (a collapsed generator scores exactly 0)
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")


def knn_radii(x: Tensor, k: int = K, chunk: int = CHUNK) -> Tensor:
    """Each row's distance to its k-th nearest other row."""
    if len(x) <= k:
        raise ValueError(f"k-nearest-neighbour radii need more than k = {k} samples, got {len(x)}")
    # k + 1 smallest: the row itself (distance 0) is among them
    return torch.cat([_dist(x[i:i + chunk], x).topk(k + 1, largest=False).values[:, -1]
                      for i in range(0, len(x), chunk)])


@torch.no_grad()
def prdc(real: Tensor, fake: Tensor, k: int = K, chunk: int = CHUNK) -> dict[str, float]:
    """Precision, recall, density, coverage of `fake` (N_f, D) against `real` (N_r, D)."""
    real, fake = real.flatten(1), fake.flatten(1).to(real.device)
    r_real, r_fake = knn_radii(real, k, chunk), knn_radii(fake, k, chunk)
    inside, count = [], []
    for i in range(0, len(fake), chunk):   # per generated sample: which real balls hold it
        hits = _dist(real, fake[i:i + chunk]) < r_real[:, None]
        inside.append(hits.any(0))
        count.append(hits.sum(0))
    recall, covered = [], []
    for i in range(0, len(real), chunk):   # per real sample: in a generated ball? its own ball holds one?
        d = _dist(real[i:i + chunk], fake)
        recall.append((d < r_fake[None]).any(1))
        covered.append(d.min(1).values < r_real[i:i + chunk])
    return {"precision": torch.cat(inside).double().mean().item(),
            "recall": torch.cat(recall).double().mean().item(),
            "density": torch.cat(count).double().mean().item() / k,
            "coverage": torch.cat(covered).double().mean().item()}


def _groups(prompts: list[str]) -> list[list[int]]:
    """The rows of each prompt with at least two images."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    return [rows for rows in groups.values() if len(rows) > 1]


@torch.no_grad()
def in_prompt_residuals(features: Tensor, prompts: list[str]) -> Tensor:
    """Each image's features minus its prompt's mean, for the prompts with at least two
    images (the rest dropped: a lone image has no spread)."""
    return torch.cat([features[rows] - features[rows].mean(0, keepdim=True) for rows in _groups(prompts)]
                     or [features[:0]])


@torch.no_grad()
def in_prompt_diversity(features: Tensor, prompts: list[str]) -> float:
    """Mean pairwise distance of the features of each prompt's images, averaged over the
    prompts with at least two images (nan if none has)."""
    per = []
    for rows in _groups(prompts):
        f = features[rows].flatten(1)
        per.append(_dist(f, f).sum() / (len(rows) * (len(rows) - 1)))
    return torch.stack(per).mean().item() if per else float("nan")
