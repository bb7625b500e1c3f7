"""An optional regression term (regress.weight > 0): DMD (v1)'s regression to fixed
(noise, sample) pairs, made where the noise pairing is exact, in the Student's own space.

Why: a one-step generator starts as the Student base's x0 prediction from pure noise, the
posterior mean E[x0 | x_T], which hardly depends on the noise: every seed gives nearly the
same picture. DMD's spread force on a factor grows with the spread the generator already
has (it pushes each sample away from the others in proportion to how far it is), so a
factor that starts with none recovers slowly, and the Student keeps a quarter of its
Teacher's variety. DMD (Yin et al. 2024, sec. 3.3) regresses the generator onto the
Teacher's ODE outputs from the same noise; across latent spaces the Teacher's noise is not
the Student's (measured on the shapes world: fixing a 2x2-pooled, channel-averaged image of
the Teacher's noise leaves the Teacher's size / position / background spread at 95 / 90 /
80 % of free noise, so no pooling map pairs them). The Student base's own multi-step
sampler is a deterministic map from the Student's noise to varied images: regressing the
generator onto it gives the noise its say from the first step, and DMD through the Bridge
moves each picture to the Teacher's distribution. The weight decays to 0 at `until`, so
the Student ends as DMD's alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..checks import Checked, accepts
from ..train import local_part


@dataclass
class RegressConfig(Checked):
    KEY = "regress."
    weight: float = accepts(0.0, ge=0)             # lambda of ||G(n) - z_base(n)||^2 (0: off)
    until: int = accepts(0, ge=0)                  # > 0: the weight decays linearly to 0 at this generator step
                                                   # (0: constant)
    pairs: int = accepts(512, ge=1, le=10**7)      # (noise, Student-base sample) pairs, drawn once
    steps: int | None = accepts(None, ge=1, le=1000)   # the Student base's sampler steps (None: its default)
    guidance: float | None = accepts(None, ge=0, le=100)   # its CFG (None: its default)

    def weight_at(self, step: int) -> float:
        if self.until <= 0:
            return self.weight
        return self.weight * max(0.0, 1.0 - step / self.until)


class BasePairs:
    """The pairs of one process: noise n_i and the Student base's sample z_i = S(n_i, p_i)
    for prompt p_i, all drawn from `seed` (the same on every process and on a resumed run),
    pair i made by process i mod N only (no work repeated across processes)."""

    def __init__(self, student, prompts: list[str], cfg: RegressConfig, res: int, seed: int,
                 process: int = 0, processes: int = 1, batch: int = 64):
        from tqdm.auto import tqdm

        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(cfg.pairs, *student.latent_shape(res, res), generator=gen)
        which = torch.randint(0, len(prompts), (cfg.pairs,), generator=gen)
        mine = torch.arange(process, cfg.pairs, processes)
        self.noise, self.prompts = noise[mine], [prompts[i] for i in which[mine].tolist()]
        out = []
        gens = [torch.Generator().manual_seed(seed * 1_000_003 + int(i)) for i in mine]   # a stochastic sampler's
        for i in tqdm(range(0, len(mine), batch), desc="regress: Student-base pairs", leave=False,   # own draws
                      disable=len(mine) <= batch):
            z = student.sample(self.prompts[i:i + batch], steps=cfg.steps, guidance=cfg.guidance,
                               latents=self.noise[i:i + batch], height=res, width=res, generator=gens[i:i + batch])
            out.append(z.float())
        self.z = torch.cat(out) if out else self.noise[:0]
        self.noise = self.noise.to(self.z.device)

    def __len__(self) -> int:
        return len(self.noise)


def regression_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """||G(n) - z||^2, mean over elements (the Student's latents are unit-scale)."""
    loss = F.mse_loss(pred.float(), target.float())
    return loss, {"regress": loss.item()}


def draw_rows(acc, n_local: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    """This process's share of a global draw of pair indices, into its own pairs (the same
    draw on every process: the loop's generator)."""
    return local_part(acc, torch.randint(0, 2**62, (batch,), generator=gen)) % max(n_local, 1)
