"""Stage 1: train the Bridge's projector (docs/design.md, "Stage 1").

L = L_rec + lambda * L_attn: latent reconstruction against the Teacher VAE's encoding
of the high-resolution image, plus attention fidelity: the frozen Teacher runs on the
bridged and on the true latent, noised with the same noise at the same timestep, and
its attention maps on the former are pulled towards those on the latter (reference
without grad). Gradients reach the projector through the frozen Teacher and the
frozen Student decoder.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..attention import AttentionCapture, CaptureSpec
from ..denoisers import Conditioning, Denoiser, load_denoiser
from ..errors import CrossdistillError, choice_error
from ..train import TrainConfig, average_gradients, default_device, local_part, optimizer_step, run, weights_dtype
from .losses import DISTANCES, attention_fidelity, latent_reconstruction
from .model import Bridge, BridgeConfig

SOURCES = ("shapes", "folder", "hf", "teacher")


@dataclass
class AttnConfig:
    weight: float = 1.0                      # lambda_attn; 0 disables the Teacher passes
    layers: tuple[int, ...] | None = None    # text-attending layers to match (None: all)
    image_to_image: bool = False
    pool: int = 1
    distance: str = "l1"                     # l1 | kl
    t_min: float = 0.02                      # Teacher timestep range, fractions of its full range
    t_max: float = 0.98

    def validate(self):
        if self.weight < 0:
            raise CrossdistillError(f"attn.weight must be >= 0, got {self.weight}")
        if self.distance not in DISTANCES:
            raise choice_error("attn.distance", self.distance, DISTANCES)
        if not 0 <= self.t_min < self.t_max <= 1:
            raise CrossdistillError(f"need 0 <= attn.t_min < attn.t_max <= 1, got {self.t_min}, {self.t_max}")
        return self

    def spec(self) -> CaptureSpec:
        return CaptureSpec(layers=self.layers, image_to_image=self.image_to_image, pool=self.pool)


@dataclass
class DataConfig:
    source: str = "shapes"         # shapes | folder | hf (a Hugging Face dataset) | teacher (data-free)
    path: str | None = None        # "folder": images (+ manifest.jsonl for prompts); "hf": dataset id or path
    split: str = "train"           # "hf": split
    image_column: str = "image"    # "hf": column holding images
    caption_column: str | None = None   # "hf": column holding prompts (None: empty prompts)
    images: int = 4000             # images whose latents are cached for training
    seed: int = 12345              # shapes world seed / teacher sampling seed

    def validate(self):
        if self.source not in SOURCES:
            raise choice_error("data.source", self.source, SOURCES)
        if self.source in ("folder", "hf") and not self.path:
            raise CrossdistillError(f"data.source={self.source} needs data.path")
        if self.images < 1:
            raise CrossdistillError(f"data.images must be >= 1, got {self.images}")
        return self


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


# -- data: (student latent, teacher latent, prompt) triples ------------------------------
@dataclass
class PairBank:
    z_s: torch.Tensor
    z_t: torch.Tensor
    prompts: list[str]
    images: torch.Tensor | None = None     # teacher-resolution images in [-1, 1] (for evaluation)


@torch.no_grad()
def encode_pairs(images: torch.Tensor, prompts: list[str], student: Denoiser, teacher: Denoiser,
                 s_res: int, t_res: int, keep_images: bool = False, batch: int = 200) -> PairBank:
    """z_t* = E_t(x) at the Teacher's resolution, z_s = E_s(resize(x)) at the Student's."""
    zs, zt = [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        x_t = x if x.shape[-1] == t_res else F.interpolate(x, size=t_res, mode="bilinear", antialias=True)
        x_s = F.interpolate(x, size=s_res, mode="area") if x.shape[-1] != s_res else x
        zt.append(teacher.space.encode(x_t))
        zs.append(student.space.encode(x_s))
    return PairBank(torch.cat(zs), torch.cat(zt), list(prompts), images if keep_images else None)


def load_images(cfg: DataConfig, teacher: Denoiser, t_res: int, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    if cfg.source == "shapes":
        from ..toy.data import ShapesDataset
        from ..toy.shapes import all_prompts

        ds = ShapesDataset(n, 64, seed, all_prompts())
        items = [ds[i] for i in range(n)]
        return torch.stack([x for x, _ in items]), [p for _, p in items]
    if cfg.source == "folder":
        from PIL import Image

        folder = Path(cfg.path)
        if not folder.is_dir():
            raise CrossdistillError(f"data.path {folder} is not a folder")
        manifest = folder / "manifest.jsonl"
        if manifest.is_file():
            rows = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()][:n]
            files, prompts = [folder / r["file"] for r in rows], [r.get("prompt", "") for r in rows]
        else:
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))[:n]
            prompts = [""] * len(files)
        if not files:
            raise CrossdistillError(f"no images in {folder}")
        return _to_batch([Image.open(f) for f in files], t_res), prompts
    if cfg.source == "hf":
        return _hf_images(cfg, t_res, n)
    # data-free: images sampled from the Teacher itself with its default sampler
    from ..toy.shapes import all_prompts

    base = all_prompts() if teacher.defaults.domain == "shapes" else [""]
    prompts = (base * (n // len(base) + 1))[:n]
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, 32):
        z = teacher.sample(prompts[i:i + 32], generator=g, height=t_res, width=t_res)
        out.append(teacher.space.decode(z).clamp(-1, 1))
    return torch.cat(out), prompts


def _to_batch(images, t_res: int) -> torch.Tensor:
    arrays = [np.array(im.convert("RGB").resize((t_res, t_res))) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def _hf_images(cfg: DataConfig, t_res: int, n: int) -> tuple[torch.Tensor, list[str]]:
    try:
        import datasets
    except ImportError:
        raise CrossdistillError("data.source=hf needs the `datasets` package (pip install datasets)") from None
    try:
        ds = datasets.load_dataset(cfg.path, split=cfg.split)
    except Exception as e:
        raise CrossdistillError(f"cannot load dataset {cfg.path!r} split {cfg.split!r}: "
                                f"{str(e).splitlines()[0][:200]}") from None
    for col in (cfg.image_column, cfg.caption_column):
        if col is not None and col not in ds.column_names:
            raise CrossdistillError(f"dataset {cfg.path!r} has no column {col!r}; columns: {', '.join(ds.column_names)}")
    ds = ds.select(range(min(n, len(ds))))
    prompts = [str(x) for x in ds[cfg.caption_column]] if cfg.caption_column else [""] * len(ds)
    return _to_batch(ds[cfg.image_column], t_res), prompts


def make_pair(cfg: Stage1Config) -> tuple[Denoiser, Denoiser, int, int]:
    device, frozen = default_device(), weights_dtype(cfg.weights_dtype, cast_fp32=False)
    teacher = load_denoiser(cfg.teacher, dtype=frozen, device=device)
    student = load_denoiser(cfg.student, dtype=frozen, device=device)
    s_res = cfg.student_resolution or student.defaults.resolution
    t_res = cfg.teacher_resolution or teacher.defaults.resolution
    student.latent_shape(s_res, s_res), teacher.latent_shape(t_res, t_res)   # VAE factor x patch divisibility
    return teacher, student, s_res, t_res


def teacher_maps(teacher: Denoiser, cap: AttentionCapture, z: torch.Tensor, t: torch.Tensor,
                 noise: torch.Tensor, cond: Conditioning):
    x_t = teacher.add_noise(z, t, noise)
    _, maps = cap.run(lambda: teacher.model_output(x_t, t, cond), text_len=cond.embeds.shape[1],
                      grid=_grid(teacher, z))
    return maps


def _grid(teacher: Denoiser, z: torch.Tensor) -> tuple[int, int]:
    p = teacher.token_patch
    return z.shape[-2] // p, z.shape[-1] // p


class BridgeTask:
    """Stage 1 as a `train.Task`."""

    name = "bridge"

    def __init__(self, cfg: Stage1Config):
        self.cfg = cfg
        self.teacher, self.student, self.s_res, self.t_res = make_pair(cfg)
        self.bridge = Bridge(self.student.space, self.teacher.space, self.s_res, self.t_res, cfg.bridge)
        if not self.bridge.trainable:
            raise CrossdistillError(f"bridge kind {cfg.bridge.kind!r} has nothing to train; "
                                    f"use `bridge eval` directly")
        self.teacher.model.requires_grad_(False)
        imgs, prompts = load_images(cfg.data, self.teacher, self.t_res, cfg.data.images, cfg.data.seed)
        self.bank = encode_pairs(imgs, prompts, self.student, self.teacher, self.s_res, self.t_res)
        with torch.no_grad():
            self._cond, self._rows = self.teacher.encode_table(prompts)
        self.opt = cfg.train.optimizer(self.bridge.parameters(), cfg.lr)

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
        t = teacher.sample_timesteps(len(idx), gen, lo=cfg.attn.t_min, hi=cfg.attn.t_max)
        noise = torch.randn(len(idx), *self.bank.z_t.shape[1:], generator=gen)
        idx, t, noise = local_part(acc, idx), local_part(acc, t), local_part(acc, noise)
        z_s, z_t = self.bank.z_s[idx], self.bank.z_t[idx]
        pred = self.bridge(z_s)
        loss, logs = latent_reconstruction(pred, z_t)
        if cfg.attn.weight > 0:
            cond = self._cond.index(self._rows[idx])
            cap = self.capture
            with torch.no_grad():
                ref = teacher_maps(teacher, cap, z_t, t, noise, cond)
            maps = teacher_maps(teacher, cap, pred, t, noise, cond)
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
        save_bridge(self.acc.unwrap_model(self.bridge), self.cfg, Path(run_dir) / "bridge")


def save_bridge(bridge: Bridge, cfg: Stage1Config, out: Path) -> None:
    from safetensors.torch import save_file

    from ..io import atomic_dir

    with atomic_dir(out, overwrite=True) as tmp:
        if bridge.projector is not None:
            save_file({k: v.contiguous() for k, v in bridge.projector.state_dict().items()},
                      str(tmp / "projector.safetensors"))
        (tmp / "bridge.json").write_text(json.dumps({
            "bridge": asdict(bridge.cfg), "teacher": cfg.teacher, "student": cfg.student,
            "student_resolution": bridge.student_res, "teacher_resolution": bridge.teacher_res,
            "student_space": space_signature(bridge.student), "teacher_space": space_signature(bridge.teacher)},
            indent=1))


def space_signature(space) -> dict:
    """What identifies a latent space for a Bridge: latent channels, normalisation, packing
    and a checksum of its VAE's weights (sum in float64: the same VAE in fp32 or bf16 agrees
    to ~1e-3, two different VAEs do not)."""
    vae = space.vae
    params = list(vae.parameters())
    total = None if any(p.is_meta for p in params) else sum(float(p.detach().double().sum()) for p in params)
    return {"channels": int(vae.config.latent_channels), "scale": float(space.scale), "shift": float(space.shift),
            "patch": int(space.patch), "vae_checksum": total}


def _same_space(saved: dict, now: dict) -> bool:
    exact = all(saved[k] == now[k] for k in ("channels", "patch"))
    close = all(saved[k] is None or now[k] is None or abs(saved[k] - now[k]) <= 1e-3 * max(1.0, abs(saved[k]))
                for k in ("scale", "shift", "vae_checksum"))
    return exact and close


def load_bridge(path: Path, student: Denoiser, teacher: Denoiser) -> Bridge:
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "bridge.json").is_file():
        raise CrossdistillError(f"{path} is not a Bridge folder (no bridge.json)")
    meta = json.loads((path / "bridge.json").read_text())
    for side, den in (("student", student), ("teacher", teacher)):
        saved = meta.get(f"{side}_space")
        if saved is not None and not _same_space(saved, space_signature(den.space)):
            raise CrossdistillError(
                f"the Bridge in {path} was trained for {side} {meta.get(side)!r}, whose latent space (VAE weights, "
                f"channels or normalisation) differs from this run's {side}; train a Bridge for this pair "
                f"(`crossdistill bridge train`)")
    bridge = Bridge(student.space, teacher.space, meta["student_resolution"], meta["teacher_resolution"],
                    BridgeConfig(**meta["bridge"]))
    if bridge.projector is not None:
        bridge.projector.load_state_dict(load_file(str(path / "projector.safetensors")))
    return bridge.eval().requires_grad_(False)


def train_bridge(cfg: Stage1Config, run_dir: Path, progress: bool = True, overwrite: bool = False) -> Path:
    from ..config import to_dict

    torch.manual_seed(cfg.train.seed)   # projector init
    task = BridgeTask(cfg)
    return run(task, cfg.train, run_dir, to_dict(cfg), progress=progress, overwrite=overwrite)
