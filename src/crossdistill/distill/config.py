"""Stage 2's typed config: the Student, its Teachers (a list, one Bridge each), the times
DMD draws, and each optional term in a sub-config of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..bridge.model import CLAMPS
from ..data.sources import DataConfig
from ..denoisers.flow import DENSITIES as T_DENSITIES
from ..checks import GUIDANCE, Checked, accepts, check_fields
from ..errors import CrossdistillError, check_fractions
from .regress import RegressConfig
from ..train import DTYPES, TrainConfig

FAKE_KINDS = ("full", "lora")
MANIFOLD_KINDS = ("reencode", "std")
GAN_SPACES = ("teacher", "student")
HEADS = ("pooled", "conv")   # the teacher-space GAN head (gan.GanHead)
GENERATOR_KINDS = ("full", "lora")
MAX_RANK = 4096


@dataclass
class FakeConfig(Checked):
    KEY = "fake."
    kind: str = accepts("full", choices=FAKE_KINDS)   # full copy of the Teacher, or a LoRA on it
    rank: int = accepts(16, ge=1, le=MAX_RANK)        # LoRA rank
    lr: float = accepts(2e-4, gt=0, le=1)             # fake-score learning rate
    updates: int = accepts(5, ge=1, le=100)           # fake-score updates per generator update


@dataclass
class GanConfig(Checked):
    """An optional adversarial term (weight 0: off): DMD2's head on the fake score's middle
    features (space: teacher) or a pixel discriminator on the decoded Student images
    (space: student)."""
    KEY = "gan."
    weight: float = accepts(0.0, ge=0)   # generator GAN loss weight (DMD2: 1e-3 .. 1e-2)
    d_weight: float = accepts(1.0, ge=0)   # classifier loss weight, added to the fake score's loss
    head: str = accepts("pooled", choices=HEADS)   # teacher space: pooled (MLP on averaged features) | conv (DMD2's
                                # head, a logit per position)
    space: str = accepts("teacher", choices=GAN_SPACES)   # teacher: the head on the fake score's features (DMD2) |
                                # student: a pixel discriminator
    lr: float = accepts(2e-4, gt=0, le=1)   # student space: the discriminator's learning rate
    data: DataConfig = field(default_factory=lambda: DataConfig(images=1000))   # real images, as in stage 1


@dataclass
class ManifoldConfig(Checked):
    """A term keeping generator latents on the Student's manifold (weight 0: off)."""
    KEY = "manifold."
    kind: str = accepts("reencode", choices=MANIFOLD_KINDS)   # reencode: ||z - sg(E_s(clamp(D_s(z))))||^2 |
                                # std: (std(z) - 1)^2
    weight: float = accepts(0.0, ge=0)   # lambda of the term (0: off)


@dataclass
class GeneratorConfig(Checked):
    """The Student generator: how many steps it takes, and what of the Student base trains."""
    KEY = "generator."
    steps: int = accepts(1, ge=1, le=8)   # 1 (the paper's one-step Student) or 2-4 (few-step: DMD2's backward
                                # simulation; exported with diffusers' LCMScheduler)
    kind: str = accepts("full", choices=GENERATOR_KINDS)   # full: every backbone weight trains | lora: a peft LoRA
                                # on the Student base, exported as diffusers LoRA weights (pytorch_lora_weights...)
    rank: int = accepts(16, ge=1, le=MAX_RANK)   # LoRA rank (kind: lora)
    final_alpha_bar: float | None = accepts(None, gt=0, lt=1)   # one step: alpha_bar of the Student's schedule
                                # at t = T - 1, rescaled to this (None: as trained; SD 1.5 0.0047, x0 = (x - 0.998 eps) / 0.068 multiplies every
                                # eps error by 15); the exported scheduler carries the rescaled schedule

    def validate(self):
        if self.final_alpha_bar is not None and self.steps != 1:
            raise CrossdistillError(f"generator.final_alpha_bar must be in (0, 1) and needs generator.steps=1, "
                                    f"got {self.final_alpha_bar} with {self.steps} steps")
        return self


@dataclass
class ExportConfig:
    """What the exported Student folder (RUN/student) holds besides the pipeline."""
    fp16_variant: bool = False  # also half-precision weights (diffusers variant="fp16")
    unet_file: bool = False     # also the UNet alone as one file, RUN/student/unet.safetensors (a second copy)
    license: str | None = None  # the card's licence (None: inherited from the Teacher and Student base)


@dataclass
class FirstTimes(Checked):
    """A first phase of stage 2 that draws DMD's Teacher times from a range of their own
    (steps 0: off). A Teacher whose latents hold far more numbers than the Student's keeps
    the layout through far more noise and redraws composition (which colour goes on which
    object) only near pure noise; there its score is the one that can change a sample's
    composition, and the whole range, afterwards, restores the details without undoing
    it (its low-noise predictions keep the composition a sample has; docs/shapes_world.md)."""
    KEY = "t_first."
    steps: int = accepts(0, ge=0)                   # generator steps of the first phase (0: off)
    t_range: tuple[float, float] = accepts((0.85, 0.98), ge=0, le=1)   # its Teacher times, as fractions of the
                                                    # full range

    def validate(self):
        check_fractions("t_first.t_range", self.t_range)
        return self


T_SAMPLINGS = ("fixed", "adaptive")
T_SIGNALS = ("eps", "x0")


@dataclass
class AdaptiveTimes(Checked):
    """t_sampling: adaptive. DMD's Teacher times are drawn from `bins` equal slices of
    `t_range` (fractions of the Teacher's range), each with probability `floor` / bins plus
    (1 - floor) times its share of a running mean of the measured disagreement, to the
    `power`, in that slice (`losses.dmd_disagreement`): per sample, the gap of the fake and
    real predictions in `signal`'s units. `eps`: the noise predictions' gap,
    alpha |fake x0 - real x0| / sigma, widest at the clean end. `x0`: the clean-image
    predictions' gap |fake x0 - real x0|, widest where the two distributions differ in
    what the Teacher decides at that noise level (layout at high noise). The generator's
    updates go where the real and the fake score disagree most about its current samples,
    on any Teacher, with no knowledge of the domain."""
    KEY = "t_adaptive."
    bins: int = accepts(10, ge=2, le=1000)          # slices of t_range
    floor: float = accepts(0.5, ge=0, le=1)         # the uniform share of every draw (1: uniform, 0: all adaptive)
    decay: float = accepts(0.98, ge=0, lt=1)        # running-mean decay per generator step
    power: float = accepts(1.0, ge=0, le=10)        # probabilities follow the disagreement to this power
    signal: str = accepts("eps", choices=T_SIGNALS)    # eps | x0: the units the disagreement is measured in


@dataclass
class TeacherConfig(Checked):
    """One Teacher of stage 2: its own Bridge, real-score guidance, fake score (of kind
    `fake.kind`) and weight. In YAML an entry is a mapping, or just the model's name."""
    KEY = "teachers[]."
    model: str = ""                 # a model name, diffusers folder or hub id (required)
    bridge_dir: str = "identity"    # a stage-1 Bridge from the Student to this Teacher, or identity / roundtrip
    guidance: float | None = accepts(None, **GUIDANCE)   # its real-score CFG; its default if None
    weight: float = accepts(1.0, gt=0)   # its DMD term's weight in the generator's loss
    guidance_interval: tuple[float, float] = accepts((0.0, 1.0), ge=0, le=1)   # Teacher times (fractions of its
                                    # range) where `guidance` applies; outside, the conditional score alone
                                    # (guidance 1: Kynkaanniemi et al. 2024, guidance at high noise drops modes;
                                    # a guidance-embedded Teacher, Flux-dev: embedded guidance 1 there)

    @classmethod
    def from_str(cls, model: str) -> "TeacherConfig":
        """`teachers: [NAME]`: a Teacher by its model alone (the other fields' defaults)."""
        return cls(model=model)

    def check(self, key: str):
        if not self.model:
            raise CrossdistillError(f"{key}.model is required (a model name, diffusers folder or hub id)")
        check_fractions(f"{key}.guidance_interval", self.guidance_interval)
        return check_fields(self, key + ".")   # again: a list item may have changed since it was built


@dataclass
class DistillConfig(Checked):
    student: str = ""           # Student base the generator starts from: a model name, diffusers folder or hub id
    teachers: list[TeacherConfig] = field(default_factory=list)   # one or more (model, bridge_dir, guidance, weight):
                                # the generator's loss is the weighted sum of their DMD terms
    prompts: str = accepts("domain", nonempty=True)   # "domain" (every prompt of the first Teacher's domain), a
                                # domain's name, a prompts file, or with prompts_column: a Hugging Face dataset (id or path)
    prompts_column: str | None = None   # the dataset column holding the captions
    prompts_split: str = "train"    # the dataset split holding the captions
    weights_dtype: str = accepts("fp32", choices=tuple(DTYPES))   # frozen weights (Teacher, VAEs, text encoders): fp32
                                                                # | bf16 | fp16
    t_range: tuple[float, float] = accepts((0.02, 0.98), ge=0, le=1)   # Teacher timesteps, as fractions of its
                                # full range
    t_density: str = accepts("uniform", choices=T_DENSITIES)   # uniform | logit_normal (flow: the time shift applies) |
                                                             # unshifted (flow: sigma uniform)
    t_shift: float = accepts(1.0, gt=0, le=1000)   # > 1: uniform draws of the range fraction u shifted toward
                                # high noise, s u / (1 + (s - 1) u) (SD3's time shift, on top of the Teacher's own);
                                # a Teacher with far more latent numbers than the Student decides
                                # composition only at its highest noise levels (docs/shapes_world.md)
    t_first: FirstTimes = field(default_factory=FirstTimes)   # a first phase with Teacher times of its own
    t_sampling: str = accepts("fixed", choices=T_SAMPLINGS)   # fixed: t_range with t_density / t_shift / t_first |
                                # adaptive: drawn where the real and fake scores disagree most (t_adaptive)
    t_adaptive: AdaptiveTimes = field(default_factory=AdaptiveTimes)
    lr: float = accepts(2e-4, gt=0, le=1)   # generator
    ema: float = accepts(0.99, ge=0, le=1)   # EMA decay of the exported generator
    clamp: str = accepts("straight_through", choices=CLAMPS)   # decoded pixels before the Bridge's projector:
                                                             # straight_through | hard | none
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    manifold: ManifoldConfig = field(default_factory=ManifoldConfig)
    regress: RegressConfig = field(default_factory=RegressConfig)   # regression onto the Student base's own
                                # (noise, sample) pairs, decaying to 0 (distill/regress.py)
    fake: FakeConfig = field(default_factory=FakeConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, batch=16, checkpoint_every=100))

    def validate(self):
        if not self.student:
            raise CrossdistillError("student is required (the Student base: a model name, diffusers folder or "
                                    "hub id)")
        if not self.teachers:
            raise CrossdistillError("teachers is required: a list of one or more Teachers, each a model name or "
                                    "a mapping with model, bridge_dir, guidance, weight")
        for i, t in enumerate(self.teachers):
            t.check(f"teachers[{i}]")
        if len(self.teachers) > 1 and self.gan.weight > 0 and self.gan.space == "teacher":
            raise CrossdistillError("gan.space=teacher (a head on one fake score's features) needs a single "
                                    "Teacher; with several use gan.space=student or gan.weight=0")
        if self.regress.weight > 0 and self.generator.steps != 1:
            raise CrossdistillError(f"regress.weight={self.regress.weight} regresses a one-step generator onto the "
                                    f"Student base's samples; it needs generator.steps=1, got {self.generator.steps}")
        check_fractions("t_range", self.t_range)
        self.t_first.validate()
        if self.t_sampling == "adaptive" and (self.t_shift != 1 or self.t_density != "uniform" or self.t_first.steps):
            raise CrossdistillError(f"t_sampling=adaptive chooses the Teacher times itself; it cannot be combined with "
                                    f"t_density={self.t_density!r}, t_shift={self.t_shift} or t_first.steps="
                                    f"{self.t_first.steps} (use uniform, 1 and 0)")
        if self.t_shift != 1 and self.t_density != "uniform":
            raise CrossdistillError(f"t_shift={self.t_shift} shifts uniform draws; it cannot be combined with "
                                    f"t_density={self.t_density!r} (use t_density=uniform or t_shift=1)")
        return self
