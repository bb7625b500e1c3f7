"""Stage 2: DMD2 in Teacher space through the frozen Bridge (docs/design.md, "Stage 2").

Per generator step: one generator update along the normalised difference of fake and
real x0 predictions at a Teacher timestep, backpropagated through the Bridge and the
frozen Student decoder into G; then `fake.updates` updates of the fake score with the
Teacher's own denoising loss on stopgrad(B(G(noise))) (two time-scale rule), the first
on the generator step's own samples (as DMD2 does), the rest on fresh ones.
The fake score is a full copy of the Teacher or a peft LoRA on the one Teacher copy,
switched off for the real score, and is queried with exactly the inputs its loss trains
it on. Optional generator terms: a latent-manifold term (`manifold`), DMD2's GAN head on
the fake score's features or a pixel discriminator (`gan`). The decoded pixels are
clamped (straight-through) before the Bridge's projector (`clamp`). Latent diagnostics
are logged at every log step (`diagnostics.py`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..bridge import Bridge, BridgeConfig
from ..bridge.io import load_bridge
from ..bridge.model import CLAMPS, clamp_pixels
from ..data.conditioning import PromptConditioner
from ..data.sources import DataConfig, hf_captions, load_images, read_prompts
from ..denoisers import Denoiser, load_denoiser
from ..errors import CrossdistillError, check_fractions, choice_error
from ..train import (Task, TrainConfig, average_gradients, default_device, ema_update, local_part, mean_logs,
                     micro_batches, optimizer_step, processes, run, weights_dtype)
from .diagnostics import bridge_drift, last_logged, latent_diagnostics, reencoded
from .generator import StudentGenerator, one_step_scheduler, student_scheduler
from .gan import HEADS, FeatureTap, GanHead, PixelDiscriminator
from .losses import (dmd_generator_loss, gan_discriminator_loss, gan_generator_loss, latent_std_loss,
                     reencode_loss)

FAKE_KINDS = ("full", "lora")
MANIFOLD_KINDS = ("reencode", "std")
GAN_SPACES = ("teacher", "student")


@dataclass
class FakeConfig:
    kind: str = "full"          # full copy of the Teacher, or a LoRA on it
    rank: int = 16              # LoRA rank
    lr: float = 2e-4            # fake-score learning rate
    updates: int = 5            # fake-score updates per generator update

    def validate(self):
        if self.kind not in FAKE_KINDS:
            raise choice_error("fake.kind", self.kind, FAKE_KINDS)
        if self.updates < 1 or self.rank < 1 or self.lr <= 0:
            raise CrossdistillError("fake.updates and fake.rank must be >= 1 and fake.lr > 0")
        return self


@dataclass
class GanConfig:
    """DMD2's optional GAN head on the fake score's middle features (weight 0: off)."""
    weight: float = 0.0         # generator GAN loss weight (DMD2: 1e-3 .. 1e-2)
    d_weight: float = 1.0       # classifier loss weight, added to the fake score's loss
    head: str = "pooled"        # teacher space: pooled (MLP on averaged features) | conv (DMD2's head, a logit per position)
    space: str = "teacher"      # teacher: the head on the fake score's features (DMD2) | student: a pixel discriminator
    lr: float = 2e-4            # student space: the discriminator's learning rate
    data: DataConfig = field(default_factory=lambda: DataConfig(images=1000))   # real images, as in stage 1

    def validate(self):
        if self.weight < 0 or self.d_weight < 0:
            raise CrossdistillError(f"gan.weight and gan.d_weight must be >= 0, got {self.weight}, {self.d_weight}")
        if self.head not in HEADS:
            raise choice_error("gan.head", self.head, HEADS)
        if self.space not in GAN_SPACES:
            raise choice_error("gan.space", self.space, GAN_SPACES)
        return self


@dataclass
class ManifoldConfig:
    """A term keeping generator latents on the Student's manifold (weight 0: off)."""
    kind: str = "reencode"      # reencode: ||z - sg(E_s(clamp(D_s(z))))||^2 | std: (std(z) - 1)^2
    weight: float = 0.0         # lambda of the term (0: off)

    def validate(self):
        if self.kind not in MANIFOLD_KINDS:
            raise choice_error("manifold.kind", self.kind, MANIFOLD_KINDS)
        if self.weight < 0:
            raise CrossdistillError(f"manifold.weight must be >= 0, got {self.weight}")
        return self


GENERATOR_KINDS = ("full", "lora")


@dataclass
class GeneratorConfig:
    """The Student generator: how many steps it takes, and what of the Student base trains."""
    steps: int = 1              # 1 (the paper's one-step Student) or 2-4 (few-step: DMD2's backward simulation;
                                # exported with diffusers' LCMScheduler)
    kind: str = "full"          # full: every backbone weight trains | lora: a peft LoRA on the Student base,
                                # exported as diffusers LoRA weights (pytorch_lora_weights.safetensors)
    rank: int = 16              # LoRA rank (kind: lora)
    final_alpha_bar: float | None = None   # one step: alpha_bar of the Student's schedule at t = T - 1, rescaled to
                                # this (None: as trained; SD 1.5 0.0047, x0 = (x - 0.998 eps) / 0.068 multiplies every
                                # eps error by 15); the exported scheduler carries the rescaled schedule

    def validate(self):
        if self.final_alpha_bar is not None and not (0 < self.final_alpha_bar < 1 and self.steps == 1):
            raise CrossdistillError(f"generator.final_alpha_bar must be in (0, 1) and needs generator.steps=1, "
                                    f"got {self.final_alpha_bar} with {self.steps} steps")
        if not 1 <= self.steps <= 8:
            raise CrossdistillError(f"generator.steps must be in 1..8, got {self.steps}")
        if self.kind not in GENERATOR_KINDS:
            raise choice_error("generator.kind", self.kind, GENERATOR_KINDS)
        if self.rank < 1:
            raise CrossdistillError(f"generator.rank must be >= 1, got {self.rank}")
        return self


@dataclass
class ExportConfig:
    """What the exported Student folder (RUN/student) holds besides the pipeline."""
    fp16_variant: bool = False  # also half-precision weights (diffusers variant="fp16")
    unet_file: bool = False     # also the UNet alone as one file, RUN/student/unet.safetensors (a second copy)
    license: str | None = None  # the card's licence (None: inherited from the Teacher and Student base)


@dataclass
class FirstTimes:
    """A first phase of stage 2 that draws DMD's Teacher times from a range of their own
    (steps 0: off). A Teacher whose latents hold far more numbers than the Student's keeps
    the layout through far more noise and redraws composition (which colour goes on which
    object) only near pure noise; there its score is the one that can change a sample's
    composition, and the whole range, afterwards, restores the details without undoing
    it (its low-noise predictions keep the composition a sample has; docs/shapes_world.md)."""
    steps: int = 0                                  # generator steps of the first phase (0: off)
    t_range: tuple[float, float] = (0.85, 0.98)     # its Teacher times, as fractions of the full range

    def validate(self):
        if self.steps < 0:
            raise CrossdistillError(f"t_first.steps must be >= 0 (0: off), got {self.steps}")
        check_fractions("t_first.t_range", self.t_range)
        return self


@dataclass
class TeacherConfig:
    """One Teacher of a several-Teacher stage 2 (`teachers:`): each has its own Bridge,
    real-score guidance, fake score (of kind `fake.kind`) and weight."""
    model: str = ""                 # a model name, diffusers folder or hub id (required)
    bridge_dir: str = "identity"    # a stage-1 Bridge from the Student to this Teacher, or identity / roundtrip
    guidance: float | None = None   # its real-score CFG; its default if None
    weight: float = 1.0             # its DMD term's weight in the generator's loss

    def check(self, key: str):
        if not self.model:
            raise CrossdistillError(f"{key}.model is required (a model name, diffusers folder or hub id)")
        if self.weight <= 0:
            raise CrossdistillError(f"{key}.weight must be > 0, got {self.weight}")
        if self.guidance is not None and self.guidance < 0:
            raise CrossdistillError(f"{key}.guidance must be >= 0, got {self.guidance}")
        return self


@dataclass
class Stage2Config:
    teacher: str = "shapes-teacher"       # Teacher: a model name, diffusers folder or hub id
    student: str = "shapes-student-base"  # Student base the one-step generator starts from
    bridge_dir: str = "identity"   # a stage-1 Bridge folder, or "identity" / "roundtrip" (nothing learned)
    teachers: list[TeacherConfig] = field(default_factory=list)   # several Teachers at once (model, bridge_dir,
                                # guidance, weight each): the generator's loss is the weighted sum of their DMD
                                # terms; empty: the one Teacher of teacher / bridge_dir / guidance, weight 1
    prompts: str = "domain"     # "domain" (every prompt of the Teacher's domain), a domain's name, a prompts file,
                                # or with prompts_column: a Hugging Face dataset (id or path)
    prompts_column: str | None = None   # the dataset column holding the captions
    prompts_split: str = "train"    # the dataset split holding the captions
    weights_dtype: str = "fp32"  # frozen weights (Teacher, VAEs, text encoders): fp32 | bf16 | fp16
    guidance: float | None = None   # real-score CFG; the Teacher's default if None
    t_range: tuple[float, float] = (0.02, 0.98)   # Teacher timesteps, as fractions of its full range
    t_density: str = "uniform"  # uniform | logit_normal (flow: the time shift applies) | unshifted (flow: sigma uniform)
    t_shift: float = 1.0        # > 1: uniform draws of the range fraction u shifted toward high noise,
                                # s u / (1 + (s - 1) u) (SD3's time shift, on top of the Teacher's own);
                                # a Teacher with far more latent numbers than the Student decides
                                # composition only at its highest noise levels (docs/shapes_world.md)
    t_first: FirstTimes = field(default_factory=FirstTimes)   # a first phase with Teacher times of its own
    lr: float = 2e-4            # generator
    ema: float = 0.99           # EMA decay of the exported generator
    clamp: str = "straight_through"   # decoded pixels before the Bridge's projector: straight_through | hard | none
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    manifold: ManifoldConfig = field(default_factory=ManifoldConfig)
    fake: FakeConfig = field(default_factory=FakeConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, batch=16, checkpoint_every=100))

    def teacher_list(self) -> list[TeacherConfig]:
        """The run's Teachers: `teachers`, or the one of teacher / bridge_dir / guidance."""
        return list(self.teachers) or [TeacherConfig(self.teacher, self.bridge_dir, self.guidance)]

    def validate(self):
        if self.lr <= 0:
            raise CrossdistillError(f"lr must be > 0, got {self.lr}")
        if self.guidance is not None and self.guidance < 0:
            raise CrossdistillError(f"guidance must be >= 0, got {self.guidance}")
        if self.teachers:
            one = Stage2Config()
            set_too = [k for k in ("teacher", "bridge_dir", "guidance") if getattr(self, k) != getattr(one, k)]
            if set_too:   # two places naming the Teacher: say which wins rather than pick silently
                raise CrossdistillError(f"`teachers` is set: remove {', '.join(set_too)} (each entry of `teachers` "
                                        f"has its own model, bridge_dir and guidance)")
            for i, t in enumerate(self.teachers):
                t.check(f"teachers[{i}]")
            if len(self.teachers) > 1 and self.gan.weight > 0 and self.gan.space == "teacher":
                raise CrossdistillError("gan.space=teacher (a head on one fake score's features) needs a single "
                                        "Teacher; with several use gan.space=student or gan.weight=0")
        check_fractions("t_range", self.t_range)
        self.t_first.validate()
        if self.t_shift <= 0:
            raise CrossdistillError(f"t_shift must be > 0 (1: no extra shift), got {self.t_shift}")
        if self.t_shift != 1 and self.t_density != "uniform":
            raise CrossdistillError(f"t_shift={self.t_shift} shifts uniform draws; it cannot be combined with "
                                    f"t_density={self.t_density!r} (use t_density=uniform or t_shift=1)")
        weights_dtype(self.weights_dtype)
        if self.clamp not in CLAMPS:
            raise choice_error("clamp", self.clamp, CLAMPS)
        return self


def _rows(cond, part: slice):
    """Rows `part` of a batch's conditioning (a micro-batch)."""
    return cond.index(torch.arange(len(cond))[part])


class TrainableView(torch.nn.Module):
    """The trainable parameters of a (mostly frozen) model, as a module of their own:
    checkpoints hold the LoRA, not the 8B frozen Teacher."""

    def __init__(self, model: torch.nn.Module, keep=lambda name: "lora_" in name):
        super().__init__()
        self.params = torch.nn.ParameterDict(
            {n.replace(".", "__"): p for n, p in model.named_parameters() if keep(n)})


def lora_targets(teacher: Denoiser) -> list[str]:
    """The Teacher's attention projections (q, k, v, out; the text stream's too) the LoRA fake score adapts."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in teacher.model.named_modules()
                   if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in
                   ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")} | {"to_out.0"})


class FakeScore:
    """The fake score f: a Teacher-family denoiser tracking the generator's distribution.
    Two kinds behind one interface: `FullFakeScore` (a trained copy of the Teacher) and
    `LoraFakeScore` (a LoRA on the Teacher itself, switched on only while f runs)."""

    def __init__(self, teacher: Denoiser, den: Denoiser):
        self.teacher, self.den = teacher, den

    @property
    def model(self) -> torch.nn.Module:
        """The module holding the fake score's weights."""
        return self.den.model

    @property
    def module(self) -> torch.nn.Module:
        """What trains and is checkpointed (built on demand: sharding replaces parameters)."""
        raise NotImplementedError

    def parameters(self):
        return list(self.module.parameters())

    @contextmanager
    def active(self):
        """The fake score's weights switched on for the duration."""
        yield self.den


class FullFakeScore(FakeScore):
    def __init__(self, teacher: Denoiser, cfg: "FakeConfig"):
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
    def __init__(self, teacher: Denoiser, cfg: "FakeConfig"):
        from peft import LoraConfig

        teacher.model.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.rank, target_modules=lora_targets(teacher),
                                             init_lora_weights=True), adapter_name="fake")
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


def cast_frozen(student: Denoiser, dtype: torch.dtype | None) -> Denoiser:
    """The Student's frozen parts (VAE, text encoders) in `dtype`; the backbone, which
    becomes the generator, stays as loaded (fp32: it trains)."""
    for name, m in student.modules():
        if name != student.backbone and dtype is not None:
            m.to(dtype=dtype)
    return student


def shifted_fractions(u: torch.Tensor, lo: float, hi: float, shift: float) -> torch.Tensor:
    """Fractions of a Teacher's range from uniform u in [0, 1): u shifted toward 1 by
    s u / (1 + (s - 1) u) (SD3's time shift; s = 1: unchanged), then laid on [lo, hi]."""
    return lo + (hi - lo) * shift * u / (1 + (shift - 1) * u)


def make_bridge(spec: str, student: Denoiser, teacher: Denoiser) -> Bridge:
    """A stage-1 Bridge folder, or one of the variants with nothing learned."""
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
        self.suffix = "" if index == 0 else f"_t{index}"
        self.key = "fake" + self.suffix   # its fake score's checkpoint / optimizer name: fake, fake_t1, ...
        # the exact map the Bridge stands in for, for the drift diagnostic (nothing to compare for these two)
        self.roundtrip = None if bridge.kind in ("roundtrip", "identity") else Bridge(
            bridge.student, bridge.teacher, bridge.student_res, bridge.teacher_res, BridgeConfig("roundtrip"))

    def make_fake(self) -> FakeScore:
        self.fake = FAKE_SCORES[self.fake_cfg.kind](self.den, self.fake_cfg)
        return self.fake

    def logs(self, logs: dict[str, float]) -> dict[str, float]:
        return {k + self.suffix: v for k, v in logs.items()}


class DistillTask(Task):
    """Stage 2 as a `train.Task`, built from its objects: the frozen Teacher(s), the Student
    (its backbone becomes the one-step generator), the Bridge(s) between their spaces and
    the prompts (`from_config` loads them). Several Teachers (`cfg.teachers`): one Bridge,
    fake score, guidance and weight each; the generator's loss sums their weighted DMD terms."""

    name = "distill"

    def __init__(self, teacher: Denoiser | list[Denoiser], student: Denoiser, bridge: Bridge | list[Bridge],
                 prompts: list[str], cfg: Stage2Config,
                 conditioners: tuple[PromptConditioner, PromptConditioner | list[PromptConditioner]] | None = None):
        """`teacher`, `bridge`: one, or a list in the order of `cfg.teacher_list()`.
        `conditioners`: the (Student's, Teacher's or Teachers') conditioning of a batch's
        prompts (default: their own text encoders, per batch: nothing is encoded ahead)."""
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        bridges = list(bridge) if isinstance(bridge, (list, tuple)) else [bridge]
        tcs = cfg.teacher_list()
        if not len(teachers) == len(bridges) == len(tcs):
            raise CrossdistillError(f"stage 2 got {len(teachers)} Teachers and {len(bridges)} Bridges for the "
                                    f"{len(tcs)} Teachers of its config")
        if len({b.student_res for b in bridges}) > 1:
            raise CrossdistillError(f"the Bridges start from different Student resolutions "
                                    f"{[b.student_res for b in bridges]}: one Student, one resolution")
        self.cfg, self.student, self.prompts = cfg, student, prompts
        self.device = next(student.model.parameters()).device
        # the resolutions the Bridge was built for are the run's (a Bridge trained at another
        # resolution than the models' defaults carries them)
        self.s_res, self.t_res = bridges[0].student_res, bridges[0].teacher_res
        if not prompts:
            raise CrossdistillError("stage 2 needs at least one prompt")
        self.text_s, text_t = conditioners or (PromptConditioner(student), [PromptConditioner(t) for t in teachers])
        text_t = list(text_t) if isinstance(text_t, (list, tuple)) else [text_t]
        self.sides = [TeacherSide(t, b, c, tc, cfg.fake, self.device, i)
                      for i, (t, b, c, tc) in enumerate(zip(teachers, bridges, text_t, tcs))]
        first = self.sides[0]   # the first Teacher, by its single-Teacher names (GAN head, tests)
        self.teacher, self.bridge, self.text_t = first.den, first.bridge, first.text
        if cfg.generator.final_alpha_bar is not None:   # the one-step generator's gentler x0 map
            self.student = student = student.with_components(
                scheduler=one_step_scheduler(student, cfg.generator.final_alpha_bar))
        self.lora = cfg.generator.kind == "lora"
        if self.lora:   # only the adapter trains; the Student base stays as it is
            from peft import LoraConfig

            self.student.model.requires_grad_(False)
            self.student.model.add_adapter(LoraConfig(r=cfg.generator.rank, lora_alpha=cfg.generator.rank,
                                                      target_modules=lora_targets(self.student),
                                                      init_lora_weights=True), adapter_name="student")
            self.student.model.train()
        else:
            self.student.model.train().requires_grad_(True)
        self.generator = StudentGenerator(self.student, cfg.generator.steps)
        self.ema = copy.deepcopy(self.student.model).eval().requires_grad_(False)
        for side in self.sides:
            side.make_fake()
        self.fake = first.fake
        self.gan = cfg.gan.weight > 0 and cfg.gan.space == "teacher"
        self.pixel_gan = cfg.gan.weight > 0 and cfg.gan.space == "student"
        if self.gan:
            self._setup_gan()
        if self.pixel_gan:
            self._setup_pixel_gan()

    @classmethod
    def from_config(cls, cfg: Stage2Config, prompts: list[str] | None = None) -> "DistillTask":
        """Load the models named in `cfg` (frozen parts in `cfg.weights_dtype`), the Bridge
        and the prompts (`cfg.prompts` unless given)."""
        device, frozen = default_device(), weights_dtype(cfg.weights_dtype, cast_fp32=False)
        tcs = cfg.teacher_list()
        teachers = [load_denoiser(tc.model, dtype=frozen, device=device) for tc in tcs]
        student = cast_frozen(load_denoiser(cfg.student, device=device), frozen)
        if prompts is None:   # the first Teacher's domain
            prompts = hf_captions(cfg.prompts, cfg.prompts_split, cfg.prompts_column) if cfg.prompts_column else \
                read_prompts(cfg.prompts, teachers[0])
        bridges = [make_bridge(tc.bridge_dir, student, t) for tc, t in zip(tcs, teachers)]
        return cls(teachers, student, bridges, prompts, cfg)

    def _setup_gan(self) -> None:
        """Real Teacher-space latents (+ their prompts) and the head, sized by one probe pass."""
        res = self.t_res
        data = self.cfg.gan.data
        imgs, prompts = load_images(data, self.teacher, res, data.images, data.seed)
        with torch.no_grad():
            self.real_z = torch.cat([self.teacher.space.encode(imgs[i:i + 64].to(self.device, self.teacher.dtype))
                                     for i in range(0, len(imgs), 64)]).float()
            self.real_prompts = prompts
        self.tap = FeatureTap(self.fake.den.model)
        with torch.no_grad(), self.fake.active() as fake, self.tap.recording():
            t = self.teacher.time_at(torch.tensor([0.5])).to(self.device)
            fake.model_output(self.real_z[:1].to(self.teacher.dtype), t, self.text_t(prompts[:1]))
        self.head = GanHead(self.tap.feats.shape[1], self.cfg.gan.head).to(self.device)

    def _setup_pixel_gan(self) -> None:
        """Real images at the Student's resolution and the pixel discriminator."""
        data, res = self.cfg.gan.data, self.s_res
        imgs, _ = load_images(data, self.teacher, self.t_res, data.images, data.seed)
        if imgs.shape[-1] != res:
            imgs = torch.nn.functional.interpolate(imgs.float(), size=(res, res), mode="area")
        self.real_px = imgs.float().clamp(-1, 1).to(self.device)
        self.disc = PixelDiscriminator().to(self.device)

    def _pixel_gan_update(self, x_fake: torch.Tensor, gen: torch.Generator, step: int) -> dict[str, float]:
        """One discriminator step: real Student-resolution images vs this step's samples."""
        n = self.cfg.train.batch
        rows = local_part(self.acc, torch.randint(0, len(self.real_px), (n,), generator=gen))
        loss, logs = gan_discriminator_loss(self.disc(self.real_px[rows.to(self.real_px.device)]),
                                            self.disc(x_fake.detach()))
        self.opt_d.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        average_gradients(self.acc, self.disc.parameters())
        optimizer_step(self.opt_d, loss, self.disc.parameters(), self.cfg.train, step, self.cfg.gan.lr)
        return logs

    def _fake_params(self, side: TeacherSide):
        """What a Teacher's fake-score optimizer updates (the first's: + the GAN head)."""
        return list(side.fake_module.parameters()) + (list(self.head.parameters()) if self.gan and side.index == 0
                                                      else [])

    def shard_targets(self):
        """The Teacher side, sharded under FSDP (train/parallel.py)."""
        if self.gan:   # the head's gradient enters the fake score mid-block (FeatureTap), past FSDP's hooks
            raise CrossdistillError("gan.weight > 0 is not supported with FSDP (train.parallel=fsdp); "
                                    "use train.parallel=ddp or gan.weight=0")
        return [m for side in self.sides for m in (side.den.model, side.fake.model)]

    def setup(self, acc) -> None:
        """Optimizers, built over the parameters as the loop left them (sharded or not)."""
        self.acc = acc
        for side in self.sides:
            side.fake_module = side.fake.module
        opt_g = self.cfg.train.optimizer(self._gen_params(), self.cfg.lr)
        opts_f = [self.cfg.train.optimizer(self._fake_params(side), self.cfg.fake.lr) for side in self.sides]
        self.opt_g, *opts_f = acc.prepare(opt_g, *opts_f)
        for side, opt in zip(self.sides, opts_f):
            side.opt = opt
        if self.pixel_gan:
            self.opt_d = acc.prepare(self.cfg.train.optimizer(self.disc.parameters(), self.cfg.gan.lr))

    def _gen_params(self) -> list[torch.nn.Parameter]:
        """What the generator's optimizer updates: the whole backbone, or the LoRA only."""
        return [p for p in self.student.model.parameters() if p.requires_grad]

    def modules(self):
        gen, ema = (TrainableView(self.student.model), TrainableView(self.ema)) if self.lora else \
            (self.student.model, self.ema)   # a LoRA Student's checkpoints hold the adapter only
        mods = {"generator": gen, "ema": ema, **{side.key: side.fake_module for side in self.sides}}
        if self.gan:
            mods["gan_head"] = self.head
        if self.pixel_gan:
            mods["pixel_disc"] = self.disc
        return mods

    def optimizers(self):
        opts = {"generator": self.opt_g, **{side.key: side.opt for side in self.sides}}
        if self.pixel_gan:
            opts["pixel_disc"] = self.opt_d
        return opts

    def checkpointing_targets(self):
        return [self.student.model] + [m for side in self.sides for m in (side.den.model, side.fake.den.model,
                                                                           side.bridge)]

    def _batch(self, gen: torch.Generator):
        """Prompts and the generator's randomness (noise; few-step: each row's step and its
        re-noising) for the global batch; this process keeps its part."""
        n, res = self.cfg.train.batch, self.s_res
        rows = local_part(self.acc, torch.randint(0, len(self.prompts), (n,), generator=gen))
        draw = local_part(self.acc, self.generator.draw(n, self.student.latent_shape(res, res), gen))
        prompts = [self.prompts[i] for i in rows.tolist()]
        return draw.to(self.device), self.text_s(prompts), [side.text(prompts) for side in self.sides]

    def _noising(self, z_hat: torch.Tensor, gen: torch.Generator, step: int, side: TeacherSide | None = None):
        """A Teacher's timesteps and noise for the global batch (shaped like `z_hat`'s rows) at
        generator step `step`; this process's part."""
        cfg, n = self.cfg, self.cfg.train.batch
        teacher = (side or self.sides[0]).den
        lo, hi = cfg.t_first.t_range if step < cfg.t_first.steps else cfg.t_range
        if cfg.t_shift == 1:
            t = teacher.sample_timesteps(n, gen, lo=lo, hi=hi, density=cfg.t_density)
        else:   # the same uniform draw, shifted toward the noisy end before it becomes a native time
            t = teacher.time_at(shifted_fractions(torch.rand(n, generator=gen), lo, hi, cfg.t_shift))
        eps = torch.randn(n, *z_hat.shape[1:], generator=gen)
        return local_part(self.acc, t).to(z_hat.device), local_part(self.acc, eps).to(z_hat.device, z_hat.dtype)

    def _real_draw(self, gen: torch.Generator, step: int):
        """Rows of the real Teacher-space latents, their timesteps and noise (global draws, this process's part)."""
        n = self.cfg.train.batch
        rows = local_part(self.acc, torch.randint(0, len(self.real_z), (n,), generator=gen))
        t, eps = self._noising(self.real_z[rows.to(self.real_z.device)], gen, step)
        return rows, t, eps

    def _real_logits(self, rows: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The head on the fake score's features of noised real Teacher-space latents."""
        z = self.real_z[rows.to(self.real_z.device)]
        with self.tap.recording():
            self.fake.den.model_output(self.teacher.add_noise(z, t, eps), t,
                                       self.text_t([self.real_prompts[i] for i in rows.tolist()]))
        return self.head(self.tap.feats)

    def _fake_update(self, side: TeacherSide, z_hat: torch.Tensor, ct, gen: torch.Generator,
                     step: int) -> dict[str, float]:
        """One update of a Teacher's fake score on stopgrad(B(G(noise))), in its own space."""
        t, eps = self._noising(z_hat, gen, step, side)
        real = self._real_draw(gen, step) if self.gan else None
        parts = micro_batches(self.cfg.train, len(z_hat))
        total, rows = 0.0, []
        params = self._fake_params(side)
        with side.fake.active() as fake:   # LoRA on: forward, backward and update
            side.opt.zero_grad(set_to_none=True)
            for part in parts:   # gradient accumulation: each micro-batch's share of the batch mean
                if self.gan:
                    with self.tap.recording():
                        loss_f, _ = fake.loss(z_hat[part], _rows(ct, part), t=t[part], noise=eps[part])
                    logits_fake = self.head(self.tap.feats)
                    loss_d, ld = gan_discriminator_loss(self._real_logits(*(x[part] for x in real)), logits_fake)
                    loss = loss_f + self.cfg.gan.d_weight * loss_d
                else:
                    loss_f, _ = fake.loss(z_hat[part], _rows(ct, part), t=t[part], noise=eps[part])
                    loss, ld = loss_f, {}
                self.acc.backward(loss / len(parts))
                total, rows = total + loss.detach() / len(parts), rows + [{"fake": loss_f.item(), **ld}]
            average_gradients(self.acc, params)
            lo = optimizer_step(side.opt, total, params, self.cfg.train, step, self.cfg.fake.lr)
        return side.logs({**mean_logs(rows), **{f"fake_{k}": v for k, v in lo.items()}})

    def _manifold(self, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if self.cfg.manifold.kind == "std":
            return latent_std_loss(z)
        return reencode_loss(z, reencoded(self.student.space, z))

    def _teacher_term(self, side: TeacherSide, z: torch.Tensor, ct, t, eps):
        """One Teacher's DMD term (+ the GAN head's, on the first) for the latents z:
        the loss, its logs and B(z) in that Teacher's space."""
        teacher = side.den
        z_hat = side.bridge(z, clamp=self.cfg.clamp)
        eps = eps.to(z_hat.dtype)
        x_t = teacher.add_noise(z_hat, t, eps)
        with torch.no_grad():
            real = teacher.predict_x0(x_t, t, ct, guidance=side.guidance, uncond=side.uncond.expand(len(z)))
        if self.gan:   # the fake pass keeps its graph: the head's logit backpropagates into G
            with side.fake.active() as fake, self.tap.recording():
                fake_x0 = fake.to_x0(x_t, t, fake.model_output(x_t, t, ct)).detach()
            gan_g, lgan = gan_generator_loss(self.head(self.tap.feats))
        else:
            with torch.no_grad(), side.fake.active() as fake:
                # conditioned exactly as `fake.loss` trains it: one call, the model's own inputs
                # (Flux: the same embedded guidance), no CFG
                fake_x0 = fake.to_x0(x_t, t, fake.model_output(x_t, t, ct))
        loss, logs = dmd_generator_loss(z_hat, real, fake_x0)
        if self.gan:
            loss = loss + self.cfg.gan.weight * gan_g
            logs.update(lgan)
        return loss, side.logs(logs), z_hat

    def _generator_loss(self, noise, cs, cts, noisings):
        """DMD (+ the optional GAN and manifold terms) on one micro-batch: the weighted sum of
        each Teacher's term (`cts`, `noisings`: its conditioning and (t, eps)); returns the
        loss, its logs, the latents z = G(noise), B(z) per Teacher and the decoded pixels
        (pixel GAN) or None."""
        cfg = self.cfg
        z = self.generator(noise, cs)
        loss_g, logs, z_hats = 0.0, {}, []
        for side, ct, (t, eps) in zip(self.sides, cts, noisings):
            loss, lt, z_hat = self._teacher_term(side, z, ct, t, eps)
            loss_g = loss_g + side.weight * loss
            logs.update(lt)
            z_hats.append(z_hat)
        x_px = None
        if self.pixel_gan:   # what users see: the clamped Student decode
            x_px = clamp_pixels(self.student.space.decode(z), "straight_through")
            gan_g, lgan = gan_generator_loss(self.disc(x_px))
            loss_g = loss_g + self.cfg.gan.weight * gan_g
            logs.update(lgan)
        if cfg.manifold.weight > 0:
            loss_m, lm = self._manifold(z)
            loss_g = loss_g + cfg.manifold.weight * loss_m
            logs.update(lm)
        return loss_g, logs, z, z_hats, x_px

    def step(self, step: int, gen: torch.Generator) -> dict[str, float]:
        cfg = self.cfg
        noise, cs, cts = self._batch(gen)
        noisings = [self._noising(torch.empty(1, *side.bridge.teacher_shape, device=self.device), gen, step, side)
                    for side in self.sides]
        parts = micro_batches(cfg.train, len(noise))
        total, rows, zs, z_hats, pixels = 0.0, [], [], [[] for _ in self.sides], []
        self.opt_g.zero_grad(set_to_none=True)
        for part in parts:   # gradient accumulation: each micro-batch's share of the batch mean
            loss_g, logs, z, zh, x_px = self._generator_loss(noise[part], _rows(cs, part),
                                                             [_rows(ct, part) for ct in cts],
                                                             [(t[part], eps[part]) for t, eps in noisings])
            self.acc.backward(loss_g / len(parts))
            total, rows = total + loss_g.detach() / len(parts), rows + [logs]
            zs += [z.detach()]
            for acc_, z_hat in zip(z_hats, zh):
                acc_.append(z_hat.detach())
            pixels += [] if x_px is None else [x_px.detach()]
        average_gradients(self.acc, self._gen_params())
        logs = mean_logs(rows)
        logs.update(optimizer_step(self.opt_g, total, self._gen_params(), cfg.train, step, cfg.lr))
        ema_update(self.ema, self.student.model, cfg.ema, step)
        z, z_hats = torch.cat(zs), [torch.cat(zh) for zh in z_hats]
        if self.pixel_gan:
            logs.update(self._pixel_gan_update(torch.cat(pixels), gen, step))
        if (step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.steps:   # what gets logged
            logs.update(latent_diagnostics(z, self.student.space))
            for side, z_hat in zip(self.sides, z_hats):   # each Bridge's drift from the exact round-trip
                if side.roundtrip is not None:
                    logs.update(side.logs({"bridge_drift": bridge_drift(z, z_hat, side.roundtrip)}))

        # two time-scale rule: each fake score keeps up with the generator
        for side, z_hat, ct in zip(self.sides, z_hats, cts):
            logs.update(self._fake_update(side, z_hat, ct, gen, step))
        for _ in range(cfg.fake.updates - 1):
            noise, cs, cts = self._batch(gen)
            with torch.no_grad():
                z = [self.generator(noise[p], _rows(cs, p)) for p in parts]
            for side, ct in zip(self.sides, cts):
                with torch.no_grad():
                    z_hat = torch.cat([side.bridge(zp, clamp=cfg.clamp) for zp in z])
                logs.update(self._fake_update(side, z_hat, ct, gen, step))
        return logs

    SAMPLES = 16   # images per sample grid (train.sample_every)

    def sample_prompts(self) -> list[str]:
        """The first SAMPLES prompts (cycled)."""
        return [self.prompts[i % len(self.prompts)] for i in range(self.SAMPLES)]

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """EMA samples (every generator step) for `sample_prompts()`, fixed noise (the same every time)."""
        res, prompts = self.s_res, self.sample_prompts()
        ema = StudentGenerator(self.student.with_components(**{self.student.backbone: self.ema}), self.generator.steps)
        draw = ema.draw(len(prompts), self.student.latent_shape(res, res), torch.Generator().manual_seed(0))
        draw.step = None   # inference: the whole chain
        return self.student.space.decode(ema(draw.to(self.device), self.text_s(prompts)))

    def export(self, run_dir: Path) -> None:
        from ..config import to_dict

        cfg = self.cfg
        logs = last_logged(Path(run_dir) / "history.jsonl")
        tcs = cfg.teacher_list()
        provenance = {"name": Path(run_dir).resolve().name, "teacher": tcs[0].model,   # the first (app, card)
                      "teachers": [tc.model for tc in tcs], "student": cfg.student,
                      "bridge": " + ".join(tc.bridge_dir for tc in tcs),
                      "license": cfg.export.license, "fp16_variant": cfg.export.fp16_variant,
                      "config": to_dict(cfg), "metrics": {f"train/{k}": v for k, v in logs.items()}}
        if self.lora:
            export_lora_student(self.student, self.ema, Path(run_dir) / "student", cfg.student, self.s_res,
                                provenance, steps=self.generator.steps)
        else:
            export_student(self.student, self.ema, Path(run_dir) / "student", self.s_res, provenance, cfg.export,
                           steps=self.generator.steps)


def export_student(student: Denoiser, weights: torch.nn.Module, out: Path, resolution: int | None = None,
                   provenance: dict | None = None, export: ExportConfig | None = None, steps: int = 1) -> None:
    """A standard StableDiffusionPipeline folder whose scheduler reproduces the generator
    exactly (1 step: DDIM; K steps: LCMScheduler), with its model card (README.md); on
    request the fp16 variant and the UNet alone as one file."""
    from ..hub import write_card
    from ..io import atomic_dir

    export = export or ExportConfig()
    comps = dict(student.components, **{student.backbone: weights, "scheduler": student_scheduler(student, steps)})
    defaults = dataclasses.replace(student.defaults, steps=steps, guidance=0.0,
                                   resolution=resolution or student.defaults.resolution)
    exported = type(student)(comps, defaults)
    with atomic_dir(out, overwrite=True) as tmp:
        exported.save_pretrained(tmp, provenance=provenance)
        if export.fp16_variant:
            exported.save_variant(tmp, torch.float16, "fp16")
        if export.unet_file:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in weights.state_dict().items()}, str(tmp / "unet.safetensors"))
        write_card(tmp)


def export_lora_student(student: Denoiser, weights: torch.nn.Module, out: Path, base: str,
                        resolution: int | None = None, provenance: dict | None = None, steps: int = 1) -> None:
    """A LoRA Student: diffusers LoRA weights (`pytorch_lora_weights.safetensors`, the
    `unet.` keys `load_lora_weights` reads), the Student's scheduler (`scheduler/`),
    `crossdistill.json` naming the base, and the model card. Load it on its base:
    `StableDiffusionPipeline.from_pretrained(BASE).load_lora_weights(FOLDER)` with the
    folder's scheduler, or `crossdistill generate --model FOLDER`."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    from ..denoisers.base import DEFAULTS_FILE
    from ..hub import write_card
    from ..io import atomic_dir

    defaults = dataclasses.replace(student.defaults, steps=steps, guidance=0.0,
                                   resolution=resolution or student.defaults.resolution)
    layers = {k: v.detach().contiguous() for k, v in
              get_peft_model_state_dict(weights, adapter_name="student").items()}
    with atomic_dir(out, overwrite=True) as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers, safe_serialization=True)
        student_scheduler(student, steps).save_pretrained(tmp / "scheduler")
        (tmp / DEFAULTS_FILE).write_text(json.dumps(
            {"family": student.family, "defaults": dataclasses.asdict(defaults),
             "lora": {"base": base, "rank": next(iter(weights.peft_config.values())).r},
             "provenance": dict(provenance or {}, lora=True)}, indent=1, default=str))
        write_card(tmp)


def distill(cfg: Stage2Config, run_dir: Path, prompts: list[str] | None = None, progress: bool = True,
            overwrite: bool = False) -> Path:
    from ..config import to_dict

    check_same_teachers(cfg, Path(run_dir))
    if 0 < cfg.train.steps <= cfg.t_first.steps:   # legitimate for a run continued later, worth saying (once)
        processes().print(f"warning: t_first.steps={cfg.t_first.steps} >= train.steps={cfg.train.steps}: every "
                          f"step of this run draws Teacher times from t_first.t_range="
                          f"{list(cfg.t_first.t_range)}, none from t_range")
    torch.manual_seed(cfg.train.seed)
    task = DistillTask.from_config(cfg, prompts)
    return run(task, cfg.train, run_dir, to_dict(cfg), progress=progress, overwrite=overwrite)


def check_same_teachers(cfg: Stage2Config, run_dir: Path) -> None:
    """A run resumes with the Teachers it was trained from, in the same order: the fake
    scores are checkpointed by position (fake, fake_t1, ...)."""
    stored = run_dir / "config.json"
    if not (stored.is_file() and any(run_dir.glob("ckpt-*"))):
        return
    before = [t.get("model") for t in stored_teachers(json.loads(stored.read_text()))]
    now = [tc.model for tc in cfg.teacher_list()]
    if before != now:
        raise CrossdistillError(f"{run_dir} was trained from Teacher(s) {before}, not {now}; resume with the same "
                                f"Teachers in the same order, or choose another --out")


def stored_teachers(config: dict) -> list[dict]:
    """The Teachers of a run's written config (RUN/config.json): its `teachers`, or the one
    of teacher / bridge_dir / guidance (as `teacher_list()` reads a live config)."""
    return config.get("teachers") or [{"model": config.get("teacher"), "bridge_dir": config.get("bridge_dir"),
                                       "guidance": config.get("guidance")}]
