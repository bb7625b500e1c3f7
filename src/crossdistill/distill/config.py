"""Stage 2's typed config: the Student, its Teachers (a list, one Bridge each), the times
DMD draws, and each optional term in a sub-config of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..bridge.model import CLAMPS
from ..data.sources import DataConfig
from ..denoisers.flow import DENSITIES as T_DENSITIES
from ..errors import CrossdistillError, check_fractions, choice_error
from ..train import TrainConfig, weights_dtype

FAKE_KINDS = ("full", "lora")
MANIFOLD_KINDS = ("reencode", "std")
GAN_SPACES = ("teacher", "student")
HEADS = ("pooled", "conv")   # the teacher-space GAN head (gan.GanHead)
GENERATOR_KINDS = ("full", "lora")


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
    """An optional adversarial term (weight 0: off): DMD2's head on the fake score's middle
    features (space: teacher) or a pixel discriminator on the decoded Student images
    (space: student)."""
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
    """One Teacher of stage 2: its own Bridge, real-score guidance, fake score (of kind
    `fake.kind`) and weight. In YAML an entry is a mapping, or just the model's name."""
    model: str = ""                 # a model name, diffusers folder or hub id (required)
    bridge_dir: str = "identity"    # a stage-1 Bridge from the Student to this Teacher, or identity / roundtrip
    guidance: float | None = None   # its real-score CFG; its default if None
    weight: float = 1.0             # its DMD term's weight in the generator's loss

    @classmethod
    def from_str(cls, model: str) -> "TeacherConfig":
        """`teachers: [NAME]`: a Teacher by its model alone (the other fields' defaults)."""
        return cls(model=model)

    def check(self, key: str):
        if not self.model:
            raise CrossdistillError(f"{key}.model is required (a model name, diffusers folder or hub id)")
        if self.weight <= 0:
            raise CrossdistillError(f"{key}.weight must be > 0, got {self.weight}")
        if self.guidance is not None and self.guidance < 0:
            raise CrossdistillError(f"{key}.guidance must be >= 0, got {self.guidance}")
        return self


@dataclass
class DistillConfig:
    student: str = ""           # Student base the generator starts from: a model name, diffusers folder or hub id
    teachers: list[TeacherConfig] = field(default_factory=list)   # one or more (model, bridge_dir, guidance, weight):
                                # the generator's loss is the weighted sum of their DMD terms
    prompts: str = "domain"     # "domain" (every prompt of the first Teacher's domain), a domain's name, a prompts
                                # file, or with prompts_column: a Hugging Face dataset (id or path)
    prompts_column: str | None = None   # the dataset column holding the captions
    prompts_split: str = "train"    # the dataset split holding the captions
    weights_dtype: str = "fp32"  # frozen weights (Teacher, VAEs, text encoders): fp32 | bf16 | fp16
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
        if self.lr <= 0:
            raise CrossdistillError(f"lr must be > 0, got {self.lr}")
        check_fractions("t_range", self.t_range)
        self.t_first.validate()
        if self.t_density not in T_DENSITIES:
            raise choice_error("t_density", self.t_density, T_DENSITIES)
        if self.t_shift <= 0:
            raise CrossdistillError(f"t_shift must be > 0 (1: no extra shift), got {self.t_shift}")
        if self.t_shift != 1 and self.t_density != "uniform":
            raise CrossdistillError(f"t_shift={self.t_shift} shifts uniform draws; it cannot be combined with "
                                    f"t_density={self.t_density!r} (use t_density=uniform or t_shift=1)")
        weights_dtype(self.weights_dtype)
        if self.clamp not in CLAMPS:
            raise choice_error("clamp", self.clamp, CLAMPS)
        return self
