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
from ..data.banks import Bank, ShardBank, build_bank, encode_latents
from ..data.conditioning import PromptConditioner
from ..data.sources import DataConfig, image_source
from ..denoisers import Denoiser, load_denoiser
from ..checks import SIZE, Checked, accepts
from ..errors import CrossdistillError
from ..train import (Task, TrainConfig, average_gradients, default_device, local_part, mean_logs, micro_batches,
                     optimizer_step, processes, run, weights_dtype, DTYPES)
from .io import save_bridge
from .losses import AttnConfig, attention_fidelity, latent_reconstruction
from .model import Bridge, BridgeConfig


@dataclass
class BridgeTrainConfig(Checked):
    teacher: str = ""                        # Teacher: a model name, diffusers folder or hub id (required)
    student: str = ""                        # Student (its VAE decoder is the Bridge's frozen front; required)
    student_resolution: int | None = accepts(None, **SIZE)   # Student image size (the model's default
                                             # if None)
    teacher_resolution: int | None = accepts(None, **SIZE)   # Teacher image size (the model's default
                                             # if None)
    lr: float = accepts(1e-3, gt=0, le=1)    # projector learning rate
    weights_dtype: str = accepts("fp32", choices=tuple(DTYPES))   # frozen Teacher / Student VAE / text encoders: fp32 |
                                                                # bf16 | fp16
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    attn: AttnConfig = field(default_factory=AttnConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=600, batch=32, checkpoint_every=100))

    def validate(self):
        for key in ("teacher", "student"):
            if not getattr(self, key):
                raise CrossdistillError(f"{key} is required (a model name, diffusers folder or hub id)")
        return self


def make_pair(cfg: BridgeTrainConfig) -> tuple[Denoiser, Denoiser, int, int]:
    device, frozen = default_device(), weights_dtype(cfg.weights_dtype, cast_fp32=False)
    teacher = load_denoiser(cfg.teacher, dtype=frozen, device=device)
    student = load_denoiser(cfg.student, dtype=frozen, device=device)
    s_res = cfg.student_resolution or student.defaults.resolution
    t_res = cfg.teacher_resolution or teacher.defaults.resolution
    student.latent_shape(s_res, s_res), teacher.latent_shape(t_res, t_res)   # VAE factor x patch divisibility
    return teacher, student, s_res, t_res


def _require_captions(cfg: BridgeTrainConfig, prompts: list[str]) -> None:
    """Attention fidelity reads the Teacher's maps over the captions' tokens: every image needs one."""
    n = sum(not p.strip() for p in prompts)
    if cfg.attn.weight > 0 and n:
        raise CrossdistillError(
            f"{n} of the bank's {len(prompts)} images have an empty prompt: attention fidelity would compare "
            "the Teacher's maps over padding. Give captions (data.caption_column, a folder's manifest.jsonl, "
            "data.captions for data.source=teacher) or set attn.weight=0")


def _require_trainable(bridge: Bridge) -> None:
    if not bridge.trainable:
        raise CrossdistillError(f"bridge kind {bridge.kind!r} has nothing to train; use `bridge eval` directly")


class BridgeTask(Task):
    """Stage 1 as a `train.Task`, built from its objects: the two models, the Bridge to
    train and the bank of paired latents (`from_config` loads them)."""

    name = "bridge"

    def __init__(self, teacher: Denoiser, student: Denoiser, bridge: Bridge, bank: Bank, cfg: BridgeTrainConfig,
                 conditioner: PromptConditioner | None = None):
        """`conditioner`: the Teacher's conditioning of a batch's prompts (default: its own
        text encoders, per batch)."""
        _require_trainable(bridge)
        _require_captions(cfg, bank.prompts)
        self.device = next(teacher.model.parameters()).device
        self.cfg, self.teacher, self.student, self.bank = cfg, teacher, student, bank
        self.bridge = bridge.to(self.device)   # the projector trains where the Teacher runs (in fp32)
        self.teacher.model.requires_grad_(False)
        self.text = conditioner or PromptConditioner(teacher)
        self.opt = cfg.train.optimizer(self.bridge.parameters(), cfg.lr)

    @classmethod
    def from_config(cls, cfg: BridgeTrainConfig, run_dir: Path | None = None, progress: bool = True,
                    overwrite: bool = False) -> "BridgeTask":
        """`run_dir`: the run folder whose `bank/` holds the paired latents, written shard by
        shard (see `write_bank`) and read back batch by batch; None: encoded into memory."""
        teacher, student, s_res, t_res = make_pair(cfg)
        bridge = Bridge(student.space, teacher.space, s_res, t_res, cfg.bridge)
        _require_trainable(bridge)   # before encoding any data
        if run_dir is None:
            source = image_source(cfg.data, teacher, t_res, cfg.data.images, cfg.data.seed)
            images, prompts = source.read(0, len(source))
            return cls(teacher, student, bridge, encode_latents(images, prompts, student, teacher, s_res, t_res), cfg)
        bank = write_bank(cfg, teacher, student, s_res, t_res, run_dir, progress, overwrite)
        return cls(teacher, student, bridge, bank, cfg)

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

    def _draw(self, idx: torch.Tensor, gen: torch.Generator):
        """Timesteps and noise for the global batch `idx`: every random draw is global,
        then each of the three is cut to this process's part."""
        cfg, acc = self.cfg, getattr(self, "acc", None)
        t = self.teacher.sample_timesteps(len(idx), gen, lo=cfg.attn.t_range[0], hi=cfg.attn.t_range[1])
        noise = torch.randn(len(idx), *self.bank.latent_shape[1], generator=gen)
        return local_part(acc, idx), local_part(acc, t), local_part(acc, noise)

    def loss(self, idx: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
        """L_rec + lambda L_attn on bank rows `idx`, the Teacher noising at `t` with `noise`."""
        cfg, teacher = self.cfg, self.teacher
        z_s, z_t, prompts = self.bank.take(idx)
        z_s, z_t = z_s.to(self.device, self.student.dtype), z_t.to(self.device, teacher.dtype)
        t, noise = t.to(self.device), noise.to(self.device, teacher.dtype)
        pred = self.bridge(z_s)
        loss, logs = latent_reconstruction(pred, z_t)
        if cfg.attn.weight > 0:
            cond = self.text(prompts)
            # the captions' own tokens (padding and start/end tokens excluded) or every text key
            keys = self.text.caption_mask(prompts, cond.embeds.shape[1]) if cfg.attn.tokens == "caption" else None
            cap = self.capture
            with torch.no_grad():
                ref = noised_maps(teacher, cap, z_t, t, noise, cond)
            maps = noised_maps(teacher, cap, pred, t, noise, cond)
            l_attn, l2 = attention_fidelity(maps, ref, cfg.attn.distance, keys)
            loss = loss + cfg.attn.weight * l_attn
            logs.update(l2)
        logs["loss"] = loss.item()
        return loss, logs

    def losses(self, idx: torch.Tensor, gen: torch.Generator):
        """The loss on the global batch `idx` (this process's part), drawing its randomness from `gen`."""
        return self.loss(*self._draw(idx, gen))

    def step(self, step: int, gen: torch.Generator) -> dict[str, float]:
        idx, t, noise = self._draw(torch.randint(0, len(self.bank), (self.cfg.train.batch,), generator=gen), gen)
        parts = micro_batches(self.cfg.train, len(idx))
        total, rows = 0.0, []
        self.opt.zero_grad(set_to_none=True)
        with self._capturing():   # backward inside: checkpointed Teacher blocks recompute with capture
            for part in parts:   # gradient accumulation: each micro-batch's share of the batch mean
                loss, logs = self.loss(idx[part], t[part], noise[part])
                self.acc.backward(loss / len(parts))
                total, rows = total + loss.detach() / len(parts), rows + [logs]
        average_gradients(self.acc, self.bridge.parameters())
        logs = mean_logs(rows)
        logs.update(optimizer_step(self.opt, total, self.bridge.parameters(), self.cfg.train, step, self.cfg.lr,
                                   "bridge", logs))
        return logs

    def export(self, run_dir: Path) -> None:
        import json

        from ..config import to_dict

        history = Path(run_dir) / "history.jsonl"
        rows = [json.loads(x) for x in history.read_text().splitlines() if x.strip()] if history.exists() else []
        metrics = {f"train/{k}": v for k, v in (rows[-1] if rows else {}).items() if not k.startswith("_")}
        save_bridge(self.acc.unwrap_model(self.bridge), Path(run_dir) / "bridge", self.cfg.teacher, self.cfg.student,
                    config=to_dict(self.cfg), metrics=metrics, name=f"{Path(run_dir).resolve().name}-bridge")


def write_bank(cfg: BridgeTrainConfig, teacher: Denoiser, student: Denoiser, s_res: int, t_res: int, run_dir: Path,
               progress: bool = True, overwrite: bool = False) -> ShardBank:
    """The stage-1 bank of `cfg.data` in `run_dir/bank`: every process samples / reads and
    encodes its own shards (shard k: process k mod N), shards already on disk are kept
    (a rerun resumes), and a bank built from other data or models is refused. The run
    folder is claimed only once the data source has been checked: bad input writes nothing."""
    from ..config import to_dict
    from ..train import claim_run_dir

    source = image_source(cfg.data, teacher, t_res, cfg.data.images, cfg.data.seed)
    _require_captions(cfg, source.prompts())   # before anything is written
    claim_run_dir(run_dir, overwrite)
    bank_dir = Path(run_dir) / "bank"
    spec = {"data": to_dict(cfg.data), "teacher": cfg.teacher, "student": cfg.student, "resolutions": [s_res, t_res]}
    state = processes()
    build_bank(bank_dir, source, spec, student, teacher, s_res, t_res, cfg.data.shard_size,
               state.process_index, state.num_processes, progress=progress and state.is_main_process)
    state.wait_for_everyone()
    return ShardBank(bank_dir)


def prepare_bank(cfg: BridgeTrainConfig, run_dir: Path, progress: bool = True, overwrite: bool = False) -> ShardBank:
    """Only the data step of stage 1: write `run_dir/bank` (then `train_bridge` into the
    same folder reuses it)."""
    from ..train import check_run_dir

    check_run_dir(run_dir, overwrite)
    teacher, student, s_res, t_res = make_pair(cfg)
    return write_bank(cfg, teacher, student, s_res, t_res, run_dir, progress, overwrite)


def train_bridge(cfg: BridgeTrainConfig, run_dir: Path, progress: bool = True, overwrite: bool = False) -> Path:
    from ..config import to_dict

    from ..train import check_run_dir

    check_run_dir(run_dir, overwrite)   # nothing is written before the models and the data are checked
    torch.manual_seed(cfg.train.seed)   # projector init
    task = BridgeTask.from_config(cfg, Path(run_dir), progress=progress, overwrite=overwrite)
    return run(task, cfg.train, run_dir, to_dict(cfg), progress=progress, overwrite=overwrite)
