"""The fake score f: a Teacher-family denoiser tracking the generator's distribution.

Two kinds behind one interface: a full trained copy of the Teacher, or a peft LoRA on the
one Teacher copy, switched on only while f runs (the real score is the plain Teacher)."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

from ..denoisers import Denoiser
from .config import FAKE_KINDS, FakeConfig


class TrainableView(torch.nn.Module):
    """The trainable parameters of a (mostly frozen) model, as a module of their own:
    checkpoints hold the LoRA, not the 8B frozen Teacher."""

    def __init__(self, model: torch.nn.Module, keep=lambda name: "lora_" in name):
        super().__init__()
        self.params = torch.nn.ParameterDict(
            {n.replace(".", "__"): p for n, p in model.named_parameters() if keep(n)})


def lora_targets(den: Denoiser) -> list[str]:
    """A backbone's attention projections (q, k, v, out; the text stream's too), what a LoRA adapts."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in den.model.named_modules()
                   if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in
                   ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")} | {"to_out.0"})


def add_lora(den: Denoiser, rank: int, name: str) -> None:
    """A peft LoRA adapter `name` of rank `rank` on the backbone's attention projections."""
    from peft import LoraConfig

    den.model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=lora_targets(den),
                                     init_lora_weights=True), adapter_name=name)


class FakeScore:
    """The interface: `den` (the denoiser to call), `model` (the module holding its weights),
    `module` (what trains and is checkpointed) and `active()` (its weights switched on)."""

    def __init__(self, teacher: Denoiser, den: Denoiser):
        self.teacher, self.den = teacher, den

    @property
    def model(self) -> torch.nn.Module:
        return self.den.model

    @property
    def module(self) -> torch.nn.Module:
        """Built on demand: sharding replaces parameters."""
        raise NotImplementedError

    @contextmanager
    def active(self):
        yield self.den


class FullFakeScore(FakeScore):
    def __init__(self, teacher: Denoiser, cfg: FakeConfig):
        den = copy.copy(teacher)
        den.components = dict(teacher.components)
        den.components[teacher.backbone] = copy.deepcopy(teacher.model).float()   # trained: fp32
        den.model = den.components[teacher.backbone]
        den.model.train().requires_grad_(True)
        super().__init__(teacher, den)

    @property
    def module(self) -> torch.nn.Module:
        return self.den.model


class LoraFakeScore(FakeScore):
    def __init__(self, teacher: Denoiser, cfg: FakeConfig):
        add_lora(teacher, cfg.rank, "fake")
        teacher.model.disable_adapters()   # the real score is the plain Teacher
        super().__init__(teacher, teacher)

    @property
    def module(self) -> torch.nn.Module:
        return TrainableView(self.teacher.model)

    @contextmanager
    def active(self):
        self.teacher.model.enable_adapters()
        try:
            yield self.den
        finally:
            self.teacher.model.disable_adapters()


FAKE_SCORES = {"full": FullFakeScore, "lora": LoraFakeScore}
assert set(FAKE_SCORES) == set(FAKE_KINDS)


def make_fake(teacher: Denoiser, cfg: FakeConfig) -> FakeScore:
    return FAKE_SCORES[cfg.kind](teacher, cfg)
