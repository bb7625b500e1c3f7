import torch

from crossdistill.distill.losses import dmd_generator_loss, regression_loss


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


def test_regression_loss():
    a = torch.ones(2, 3)
    assert regression_loss(a, a)[0].item() == 0 and regression_loss(a, -a)[0].item() == 4
