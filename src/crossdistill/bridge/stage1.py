"""Stage 1: train the Bridge's projector (docs/design.md, "Stage 1").

L = L_rec + lambda * L_attn: latent reconstruction against the Teacher VAE's encoding
of the high-resolution image, plus attention fidelity: the frozen Teacher runs on the
bridged and on the true latent, noised with the same noise at the same timestep, and
its attention maps on the former are pulled towards those on the latter (reference
without grad). Gradients reach the projector through the frozen Teacher and the
frozen Student decoder.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..attention import AttentionCapture, noised_maps
from ..data.banks import PairBank, encode_pairs
from ..data.sources import DataConfig, load_images
from ..denoisers import Denoiser, load_denoiser
from ..errors import CrossdistillError
from ..train import Task, TrainConfig, average_gradients, default_device, local_part, optimizer_step, run, weights_dtype
from .io import save_bridge
from .losses import AttnConfig, attention_fidelity, latent_reconstruction
from .model import Bridge, BridgeConfig


@dataclass
class Stage1Config:
    teacher: str = "shapes-teacher"
    student: str = "shapes-student-base"
    student_resolution: int | None = None    # model defaults if None
    teacher_resolution: int | None = None
    lr: float = 1e-3
    weights_dtype: str = "fp32"              # frozen Teacher / Student VAE / text encoders: fp32 | bf16 | fp16
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    attn: AttnConfig = field(default_factory=AttnConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=600, batch=32, checkpoint_every=100))

    def validate(self):
        if self.lr <= 0:
            raise CrossdistillError(f"lr must be > 0, got {self.lr}")
        weights_dtype(self.weights_dtype)
        return self


def make_pair(cfg: Stage1Config) -> tuple[Denoiser, Denoiser, int, int]:
    device, frozen = default_device(), weights_dtype(cfg.weights_dtype, cast_fp32=False)
    teacher = load_denoiser(cfg.teacher, dtype=frozen, device=device)
    student = load_denoiser(cfg.student, dtype=frozen, device=device)
    s_res = cfg.student_resolution or student.defaults.resolution
    t_res = cfg.teacher_resolution or teacher.defaults.resolution
    student.latent_shape(s_res, s_res), teacher.latent_shape(t_res, t_res)   # VAE factor x patch divisibility
    return teacher, student, s_res, t_res


def _require_trainable(bridge: Bridge) -> None:
    if not bridge.trainable:
        raise CrossdistillError(f"bridge kind {bridge.kind!r} has nothing to train; use `bridge eval` directly")


class BridgeTask(Task):
    """Stage 1 as a `train.Task`, built from its objects: the two models, the Bridge to
    train and the bank of paired latents (`from_config` loads them)."""

    name = "bridge"

    def __init__(self, teacher: Denoiser, student: Denoiser, bridge: Bridge, bank: PairBank, cfg: Stage1Config):
        _require_trainable(bridge)
        device = next(teacher.model.parameters()).device
        self.cfg, self.teacher, self.student, self.bank = cfg, teacher, student, bank
        self.bridge = bridge.to(device)   # the projector trains where the Teacher runs (in fp32)
        self.teacher.model.requires_grad_(False)
        if bank.conditioning is not None:
            self._cond, self._rows = bank.conditioning
        else:
            with torch.no_grad():
                self._cond, self._rows = self.teacher.encode_table(bank.prompts)
        self.opt = cfg.train.optimizer(self.bridge.parameters(), cfg.lr)

    @classmethod
    def from_config(cls, cfg: Stage1Config) -> "BridgeTask":
        teacher, student, s_res, t_res = make_pair(cfg)
        bridge = Bridge(student.space, teacher.space, s_res, t_res, cfg.bridge)
        _require_trainable(bridge)   # before encoding any data
        imgs, prompts = load_images(cfg.data, teacher, t_res, cfg.data.images, cfg.data.seed)
        return cls(teacher, student, bridge, encode_pairs(imgs, prompts, student, teacher, s_res, t_res), cfg)

    def setup(self, acc) -> None:
        self.acc = acc
        self.opt = acc.prepare(self.opt)   # models stay unwrapped: parallelism is train/parallel.py's

    def modules(self):
        return {"bridge": self.bridge}

    def shard_targets(self):
        """Nothing: under FSDP stage 1 runs data-parallel. The attention-fidelity gradient
        leaves the Teacher's blocks through the captured maps, not through the blocks'
        outputs, so FSDP's backward hooks would not re-gather the weights it needs (a crash,
        measured); nothing of the Teacher trains here, and in bf16 it fits one GPU (SD 3.5
        large 16 GB, Flux 24 GB; benchmarks/full_scale.py)."""
        return []

    def checkpointing_targets(self):
        return [self.bridge, self.teacher.model]

    def optimizers(self):
        return {"bridge": self.opt}

    @contextmanager
    def _capturing(self):
        if self.cfg.attn.weight <= 0:
            yield
            return
        with AttentionCapture(self.teacher, self.cfg.attn.spec()) as self.capture:
            yield

    def losses(self, idx: torch.Tensor, gen: torch.Generator):
        """`idx` indexes the global batch; every random draw is global, then this process's part."""
        cfg, teacher, acc = self.cfg, self.teacher, self.acc
        t = teacher.sample_timesteps(len(idx), gen, lo=cfg.attn.t_range[0], hi=cfg.attn.t_range[1])
        noise = torch.randn(len(idx), *self.bank.z_t.shape[1:], generator=gen)
        idx, t, noise = local_part(acc, idx), local_part(acc, t), local_part(acc, noise)
        z_s, z_t = self.bank.z_s[idx], self.bank.z_t[idx]
        pred = self.bridge(z_s)
        loss, logs = latent_reconstruction(pred, z_t)
        if cfg.attn.weight > 0:
            cond = self._cond.index(self._rows[idx])
            cap = self.capture
            with torch.no_grad():
                ref = noised_maps(teacher, cap, z_t, t, noise, cond)
            maps = noised_maps(teacher, cap, pred, t, noise, cond)
            l_attn, l2 = attention_fidelity(maps, ref, cfg.attn.distance)
            loss = loss + cfg.attn.weight * l_attn
            logs.update(l2)
        logs["loss"] = loss.item()
        return loss, logs

    def step(self, step: int, gen: torch.Generator) -> dict[str, float]:
        idx = torch.randint(0, len(self.bank.z_s), (self.cfg.train.batch,), generator=gen)
        with self._capturing():   # backward inside: checkpointed Teacher blocks recompute with capture
            loss, logs = self.losses(idx, gen)
            self.opt.zero_grad(set_to_none=True)
            self.acc.backward(loss)
        average_gradients(self.acc, self.bridge.parameters())
        logs.update(optimizer_step(self.opt, loss, self.bridge.parameters(), self.cfg.train, step, self.cfg.lr))
        return logs

    def export(self, run_dir: Path) -> None:
        save_bridge(self.acc.unwrap_model(self.bridge), Path(run_dir) / "bridge", self.cfg.teacher, self.cfg.student)


def train_bridge(cfg: Stage1Config, run_dir: Path, progress: bool = True, overwrite: bool = False) -> Path:
    from ..config import to_dict

    torch.manual_seed(cfg.train.seed)   # projector init
    task = BridgeTask.from_config(cfg)
    return run(task, cfg.train, run_dir, to_dict(cfg), progress=progress, overwrite=overwrite)
