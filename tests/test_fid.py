import numpy as np
import pytest
import torch

from crossdistill.eval.fid import features, fid, frechet_distance, moments


def test_frechet_distance_closed_form():
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    s1, s2 = np.eye(3), 4 * np.eye(3)
    # |mu1 - mu2|^2 + tr(I + 4I - 2 * 2I) = 5 + 3
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(8.0)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_fid_moves_with_distribution_shift():
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(500, 4, generator=g)]
    b = [torch.randn(500, 4, generator=g)]
    c = [torch.randn(500, 4, generator=g) + 1.0]
    ident = lambda x: x
    assert fid(a, b, ident) < 0.2 < 3.0 < fid(a, c, ident)
    feats = features(a, ident)
    (_, sigma), n = moments(feats), len(feats)
    assert n == 500 and sigma.shape == (4, 4)
