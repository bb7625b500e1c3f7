"""The DMD gradient, as the library implements it, moves a generator's distribution to
the target's: a 2-D Gaussian toy with the exact real score and a learned fake score.

Noising is rectified flow, x_t = (1 - t) x0 + t eps. For x0 ~ N(m, s^2) (per dimension)
the denoiser's optimum is E[x0 | x_t] = m + (1 - t) s^2 / ((1 - t)^2 s^2 + t^2) (x_t - (1 - t) m),
so the real x0 prediction is exact and the fake one is a Gaussian denoiser (m_f, s_f)
trained online on the generator's samples with the usual x0 regression (two time scales).
The generator steps with plain SGD, so the gradient's scale matters as well as its
direction: a sign error, real and fake swapped, or a gradient 50x too large or too small
(a lost normalisation, a sum for a mean) fails it.
"""

import torch

from crossdistill.distill.losses import dmd_generator_loss

TARGET_M, TARGET_S = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.5])


def posterior_x0(x_t, t, m, s):
    a = 1 - t
    return m + a * s ** 2 / (a ** 2 * s ** 2 + t ** 2) * (x_t - a * m)


def run(steps=600, swap=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    shift = torch.zeros(2, requires_grad=True)           # generator: z = exp(log_scale) * n + shift
    log_scale = torch.zeros(2, requires_grad=True)
    fake_m = torch.zeros(2, requires_grad=True)          # fake score: a Gaussian denoiser
    fake_log_s = torch.zeros(2, requires_grad=True)
    opt_g = torch.optim.SGD([shift, log_scale], lr=0.1)   # plain SGD: the gradient's scale matters
    opt_f = torch.optim.Adam([fake_m, fake_log_s], lr=5e-2)

    def sample(n):
        return torch.randn(n, 2, generator=g) * log_scale.exp() + shift

    for _ in range(steps):
        for _ in range(5):   # the fake score tracks the generator
            x0 = sample(256).detach()
            t, eps = torch.rand(256, 1, generator=g) * 0.96 + 0.02, torch.randn(256, 2, generator=g)
            x_t = (1 - t) * x0 + t * eps
            loss_f = (posterior_x0(x_t, t, fake_m, fake_log_s.exp()) - x0).pow(2).mean()
            opt_f.zero_grad()
            loss_f.backward()
            opt_f.step()
        z = sample(256)
        t, eps = torch.rand(256, 1, generator=g) * 0.96 + 0.02, torch.randn(256, 2, generator=g)
        x_t = (1 - t) * z.detach() + t * eps
        with torch.no_grad():
            real = posterior_x0(x_t, t, TARGET_M, TARGET_S)
            fake = posterior_x0(x_t, t, fake_m, fake_log_s.exp())
        loss, _ = dmd_generator_loss(z, fake, real) if swap else dmd_generator_loss(z, real, fake)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
    return shift.detach(), log_scale.detach().exp()


def test_dmd_moves_the_generator_to_the_target():
    m, s = run()
    assert torch.allclose(m, TARGET_M, atol=0.15), m
    assert torch.allclose(s, TARGET_S, rtol=0.15), s


def test_dmd_with_real_and_fake_swapped_moves_away():
    m, s = run(steps=300, swap=True)   # away from the target, or diverged (nan)
    assert not ((m - TARGET_M).abs().max() < 1.0 and (s / TARGET_S).log().abs().max() < 0.5), (m, s)
