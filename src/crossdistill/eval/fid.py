"""Frechet distance between feature distributions (Heusel et al. 2017, eq. 6).

One code path for every feature network: the shapes world's classifier here, an
Inception network at real scale. `FeatureNet` is anything mapping images in [-1, 1],
(B, 3, H, W), to features (B, D).
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable

import numpy as np
import torch
from scipy import linalg

FeatureNet = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def features(batches: Iterable[torch.Tensor], net: FeatureNet) -> torch.Tensor:
    """The features of all images, (N, D) float32 on the CPU."""
    return torch.cat([net(x).float().cpu() for x in batches])


def moments(feats: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features (float64)."""
    f = feats.double().numpy()
    if len(f) < 2:
        raise ValueError("FID needs at least 2 images")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)."""
    diff = mu1 - mu2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if caught or not np.isfinite(covmean).all():  # (near-)singular product: regularise, as pytorch-fid
        eps = np.eye(len(mu1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
    covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(images_a: Iterable[torch.Tensor], images_b: Iterable[torch.Tensor], net: FeatureNet) -> float:
    return frechet_distance(*moments(features(images_a, net)), *moments(features(images_b, net)))
