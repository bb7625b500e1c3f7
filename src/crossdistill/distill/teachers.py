"""The Teacher side of stage 2: each Teacher with its Bridge, conditioning, fake score,
guidance and weight, and the Teacher times DMD draws."""

from __future__ import annotations

import torch

from ..bridge import Bridge, BridgeConfig
from ..bridge.io import load_bridge
from ..data.conditioning import PromptConditioner
from ..denoisers import Denoiser
from ..train import local_part
from .config import DistillConfig, FakeConfig, TeacherConfig
from .fake import FakeScore, make_fake


def make_bridge(spec: str, student: Denoiser, teacher: Denoiser) -> Bridge:
    """A stage-1 Bridge folder (or a shipped Bridge's name, or a hub id), or one of the
    variants with nothing learned (identity, roundtrip)."""
    s_res, t_res = student.defaults.resolution, teacher.defaults.resolution
    if spec in ("identity", "roundtrip"):
        return Bridge(student.space, teacher.space, s_res, t_res, BridgeConfig(spec))
    from ..hub import fetch_bridge

    return load_bridge(fetch_bridge(spec), student, teacher)


class TeacherSide:
    """One Teacher of stage 2 and what belongs to it: the frozen denoiser, the Bridge into
    its space, its prompt conditioning, its fake score, its real-score guidance and its
    weight in the generator's loss. `suffix` tells its logs apart (the first's: none)."""

    def __init__(self, den: Denoiser, bridge: Bridge, text: PromptConditioner, tc: TeacherConfig,
                 fake: FakeConfig, device, index: int):
        self.den, self.text, self.weight, self.index = den, text, tc.weight, index
        self.den.model.requires_grad_(False)
        self.bridge = bridge.to(device).requires_grad_(False)
        self.uncond = text.uncond()
        self.fake_cfg, self.fake = fake, None   # made by `make_fake`, once the generator exists
        self.guidance = den.defaults.guidance if tc.guidance is None else tc.guidance
        lo, hi = tc.guidance_interval
        self.interval = None if (float(lo), float(hi)) == (0.0, 1.0) else den.time_at(torch.tensor([lo, hi]))   # native times
        self.suffix = "" if index == 0 else f"_t{index}"
        self.key = "fake" + self.suffix   # its fake score's checkpoint / optimizer name: fake, fake_t1, ...
        # the exact map the Bridge stands in for, for the drift diagnostic (nothing to compare for these two)
        self.roundtrip = None if bridge.kind in ("roundtrip", "identity") else Bridge(
            bridge.student, bridge.teacher, bridge.student_res, bridge.teacher_res, BridgeConfig("roundtrip"))

    def guidance_at(self, t: torch.Tensor) -> float | torch.Tensor:
        """The real score's guidance at Teacher times `t`: `guidance` inside the interval,
        1 (the conditional score alone) outside it; one number when the interval is the
        whole range."""
        if self.interval is None:
            return self.guidance
        lo, hi = self.interval.to(t.device)
        return torch.where((t >= lo) & (t <= hi), float(self.guidance), 1.0)

    def make_fake(self) -> FakeScore:
        self.fake = make_fake(self.den, self.fake_cfg)
        return self.fake

    def logs(self, logs: dict[str, float]) -> dict[str, float]:
        return {k + self.suffix: v for k, v in logs.items()}


def shifted_fractions(u: torch.Tensor, lo: float, hi: float, shift: float) -> torch.Tensor:
    """Fractions of a Teacher's range from uniform u in [0, 1): u shifted toward 1 by
    s u / (1 + (s - 1) u) (SD3's time shift; s = 1: unchanged), then laid on [lo, hi]."""
    return lo + (hi - lo) * shift * u / (1 + (shift - 1) * u)


class TimeBins(torch.nn.Module):
    """t_sampling: adaptive, for one Teacher: a running mean of the disagreement measured in
    each slice of the Teacher-time range (a buffer: checkpointed, so a resumed run draws as
    the uninterrupted one would)."""

    def __init__(self, bins: int):
        super().__init__()
        self.register_buffer("score", torch.ones(bins, dtype=torch.float64))   # no measurement yet: uniform
        self.register_buffer("seen", torch.zeros(bins, dtype=torch.bool))    # a slice's first measurement sets it

    def probs(self, floor: float, power: float) -> torch.Tensor:
        s = self.score.clamp_min(0).pow(power)
        share = s / s.sum() if s.sum() > 0 else torch.full_like(s, 1 / len(s))
        return floor / len(s) + (1 - floor) * share

    @torch.no_grad()
    def observe(self, bins: torch.Tensor, values: torch.Tensor, decay: float) -> None:
        """Fold one step's per-sample disagreement (global: every process the same) into the
        running mean of the slices it fell in; slices with no sample keep theirs."""
        n, values, bins = len(self.score), values.detach().double().cpu(), bins.cpu()   # CPU: deterministic
        total = torch.zeros(n, dtype=torch.float64).index_add_(0, bins, values)
        count = torch.zeros(n, dtype=torch.float64).index_add_(0, bins, torch.ones_like(values))
        hit = count > 0
        mean = total[hit] / count[hit]
        old = torch.where(self.seen[hit], self.score[hit], mean)   # unmeasured slices start at their first mean
        self.score[hit] = decay * old + (1 - decay) * mean
        self.seen |= hit
        # the other slices' prior (1) would be in other units: until measured they take the measured mean
        if self.seen.any():
            self.score[~self.seen] = self.score[self.seen].mean()


class TeacherTimes:
    """Where DMD looks: the Teacher times (and noise) of a global batch at a generator step.
    t_sampling fixed: the first `t_first.steps` steps draw from `t_first.t_range`, later ones
    from `t_range`, with `t_density`, or uniform fractions shifted by `t_shift`. adaptive:
    slices of `t_range` drawn by the disagreement measured in them (`TimeBins`, one per
    Teacher; `observe` after each generator pass). Draws are global (the same on every
    process) and each process keeps its part."""

    def __init__(self, cfg: DistillConfig, teachers: int = 1):
        self.cfg = cfg
        self.adaptive = cfg.t_sampling == "adaptive"
        self.bins = torch.nn.ModuleList([TimeBins(cfg.t_adaptive.bins) for _ in range(teachers if self.adaptive else 0)])
        self.drawn: dict[int, torch.Tensor] = {}   # each Teacher's slices of its last generator draw (global)

    def range_at(self, step: int) -> tuple[float, float]:
        cfg = self.cfg
        return cfg.t_first.t_range if step < cfg.t_first.steps else cfg.t_range

    def probs(self, index: int = 0) -> torch.Tensor:
        a = self.cfg.t_adaptive
        return self.bins[index].probs(a.floor, a.power)

    def draw(self, teacher: Denoiser, like: torch.Tensor, gen: torch.Generator, step: int, acc, index: int = 0,
             remember: bool = False):
        """(t, eps) for the global batch, eps shaped like `like`'s rows; this process's part
        on `like`'s device (eps in its dtype). `index`: which Teacher (adaptive: its slices);
        `remember`: keep the slices drawn for `observe` (the generator's draw)."""
        cfg, n = self.cfg, self.cfg.train.batch
        lo, hi = self.range_at(step)
        if self.adaptive:   # a slice by its probability, then uniform inside it
            p = self.probs(index)
            b = torch.multinomial(p.float().cpu(), n, replacement=True, generator=gen)
            u = (b + torch.rand(n, generator=gen)) / len(p)
            t = teacher.time_at(lo + (hi - lo) * u)
            if remember:
                self.drawn[index] = b
        elif cfg.t_shift == 1:
            t = teacher.sample_timesteps(n, gen, lo=lo, hi=hi, density=cfg.t_density)
        else:   # the same uniform draw, shifted toward the noisy end before it becomes a native time
            t = teacher.time_at(shifted_fractions(torch.rand(n, generator=gen), lo, hi, cfg.t_shift))
        eps = torch.randn(n, *like.shape[1:], generator=gen)
        return local_part(acc, t).to(like.device), local_part(acc, eps).to(like.device, like.dtype)

    def observe(self, index: int, disagreement: torch.Tensor, acc) -> dict[str, float]:
        """Adaptive: this process's per-sample disagreement of Teacher `index`'s last
        generator draw, gathered over processes (the slices are global), into its running
        means. Returns the logs: the mean Teacher-time fraction the next draw aims at."""
        if not self.adaptive or index not in self.drawn:
            return {}
        values = disagreement.detach().float()
        if acc is not None and acc.num_processes > 1:
            values = acc.gather(values)
        self.bins[index].observe(self.drawn.pop(index), values, self.cfg.t_adaptive.decay)
        p = self.probs(index)
        lo, hi = self.cfg.t_range
        centres = lo + (hi - lo) * (torch.arange(len(p), dtype=torch.float64) + 0.5) / len(p)
        return {"t_aim": float((p.cpu() * centres).sum())}
