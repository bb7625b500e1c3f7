"""Precision / recall / density / coverage and the in-prompt diversity (issue: one image per
prompt): the chunked torch code against the authors' reference implementation, and what a
collapsed generator scores."""

import numpy as np
import pytest
import torch

from crossdistill.eval.prdc import in_prompt_diversity, knn_radii, prdc


@pytest.mark.parametrize("chunk", [7, 4096])
def test_prdc_matches_the_reference_implementation(chunk, capsys):
    """The same four numbers as `prdc.compute_prdc` (Naeem et al.'s code) on Gaussians of
    different means and widths, chunked or not."""
    from prdc import compute_prdc as reference   # a test dependency (pyproject's test extra)

    rng = np.random.default_rng(0)
    real = rng.normal(size=(120, 8)).astype(np.float32)
    fake = (rng.normal(size=(90, 8)) * 0.6 + 0.4).astype(np.float32)
    want = reference(real, fake, nearest_k=5)
    got = prdc(torch.from_numpy(real), torch.from_numpy(fake), k=5, chunk=chunk)
    assert got == pytest.approx({k: float(v) for k, v in want.items()}, abs=1e-9)
    assert 0 < got["recall"] < got["precision"]   # a narrower generator: inside the data, missing part of it


def test_a_collapsed_generator_has_no_recall_and_a_copy_of_the_data_has_all():
    real = torch.randn(200, 16, generator=torch.Generator().manual_seed(1))
    copy = prdc(real, real.clone())
    assert copy["precision"] == copy["recall"] == copy["coverage"] == 1.0
    one = prdc(real, real[:1].repeat(200, 1) + 1e-6 * torch.randn(200, 16))   # every seed: the same sample
    assert one["precision"] == 1.0 and one["recall"] < 0.05 and one["coverage"] < 0.05


def test_knn_radii_skip_the_sample_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    assert knn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="more than k = 5"):
        knn_radii(x)


def test_in_prompt_diversity_is_the_mean_pairwise_distance_and_zero_for_one_picture():
    f = torch.tensor([[0.0, 0], [3, 4], [1, 1], [1, 1], [9, 9]])
    prompts = ["a", "a", "b", "b", "c"]   # c has one image: no pair
    assert in_prompt_diversity(f, prompts) == pytest.approx((5.0 + 0.0) / 2)
    assert in_prompt_diversity(f[[0, 0, 2, 2]], ["a", "a", "b", "b"]) == 0.0


def test_in_prompt_residuals_remove_each_prompts_mean_and_drop_lone_images():
    from crossdistill.eval.prdc import in_prompt_residuals

    f = torch.tensor([[1.0, 1], [3, 3], [5, 0], [7, 0], [9, 9]])
    r = in_prompt_residuals(f, ["a", "a", "b", "b", "c"])
    assert r.tolist() == [[-1, -1], [1, 1], [-1, 0], [1, 0]]
