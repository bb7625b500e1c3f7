import pytest
import torch

from crossdistill.distill.losses import dmd_generator_loss, latent_std_loss, reencode_loss


def test_dmd_gradient_is_normalised_direction():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 8, 8, generator=g, requires_grad=True)
    real, fake = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    loss, logs = dmd_generator_loss(z, real, fake)
    loss.backward()
    w = (z.detach() - real).abs().mean(dim=(1, 2, 3), keepdim=True)
    expected = (fake - real) / w / z.numel()
    assert torch.allclose(z.grad, expected, atol=1e-7)
    assert logs["dmd"] > 0


def test_dmd_zero_when_fake_matches_real_and_finite_on_degenerate_input():
    z = torch.zeros(2, 4, 4, 4, requires_grad=True)
    real = torch.zeros(2, 4, 4, 4)
    loss, _ = dmd_generator_loss(z, real, real.clone())
    loss.backward()
    assert loss.item() == 0 and torch.equal(z.grad, torch.zeros_like(z))   # floor avoids 0/0
    fake = torch.full((2, 4, 4, 4), float("nan"))
    loss, _ = dmd_generator_loss(z, real, fake)
    assert torch.isfinite(loss)


def test_manifold_losses_known_values():
    z = torch.full((2, 4, 2, 2), 3.0, requires_grad=True)
    loss, logs = reencode_loss(z, torch.ones(2, 4, 2, 2))
    assert loss.item() == 4.0 and logs["manifold"] == 4.0
    loss.backward()
    assert torch.allclose(z.grad, torch.full_like(z, 2 * 2.0 / z.numel()))   # target held fixed (stop-gradient)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 8, 8, generator=g) * 2.0
    loss, _ = latent_std_loss(z)
    assert loss.item() == pytest.approx(((z.flatten(1).std(1) - 1) ** 2).mean().item())
    assert latent_std_loss(torch.randn(64, 4, 32, 32, generator=g))[0].item() < 1e-3
