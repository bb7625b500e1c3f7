"""The Bridge: Student latents -> Teacher latents, and the baselines it is compared to.

  bridge          B(z_s) = P(D_s(z_s))  frozen Student decoder (pixels or its last
                  feature map) + a small learned projector P (docs/design.md, "The Bridge")
  projector_only  B(z_s) = P(z_s)       no decoder prior
  roundtrip       B(z_s) = E_t(up(D_s(z_s)))  the Teacher's own VAE encoder; nothing learned
  identity        B(z_s) = z_s          shared latent space (Student base as Teacher)

All variants share one interface, `forward(z_s, clamp, decoded) -> z_t`, and map the
Student's normalised latent shape to the Teacher's for any integer resolution ratio. A
caller that already decoded z_s passes the pixels (`decoded`): variants that read them
(`reads_pixels`) then do not decode again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..checks import Checked, accepts, check_fields
from ..errors import CrossdistillError, choice_error
from ..spaces import LatentSpace

KINDS = ("bridge", "projector_only", "roundtrip", "identity")
TAPS = ("pixels", "features")
CLAMPS = ("none", "hard", "straight_through")


def clamp_pixels(x: Tensor, mode: str) -> Tensor:
    """Decoded pixels limited to [-1, 1], as the exported pipeline shows them to users.
    "straight_through": clamped forward, identity gradient (out-of-range pixels still
    receive the Teacher's gradient that pulls them back); "hard": torch.clamp (zero
    gradient outside); "none": unclamped."""
    if mode == "none":
        return x
    if mode == "hard":
        return x.clamp(-1, 1)
    if mode == "straight_through":
        return x + (x.clamp(-1, 1) - x).detach()
    raise choice_error("clamp", mode, CLAMPS)


@dataclass
class BridgeConfig(Checked):
    KEY = "bridge."
    kind: str = accepts("bridge", choices=KINDS)   # bridge (D_s + learned projector) | identity | roundtrip
                             # (nothing learned)
    tap: str = accepts("pixels", choices=TAPS)     # what of the frozen decoder the projector sees
    width: int = accepts(64, ge=1, le=4096)        # projector channels
    depth: int = accepts(2, ge=0, le=64)           # residual blocks after the resampling

    def validate(self) -> "BridgeConfig":
        return check_fields(self, self.KEY)   # again: a field may have been set since it was built


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if ch % g == 0)
        self.body = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                  nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def resolution_ratio(src: int, dst: int, what: str) -> tuple[str, int]:
    """("down", r) if src = r * dst, ("up", r) if dst = r * src; an error otherwise."""
    if src % dst == 0:
        return "down", src // dst
    if dst % src == 0:
        return "up", dst // src
    raise CrossdistillError(f"the Bridge cannot map {what}: {src} -> {dst} px is not an integer "
                            f"resolution ratio")


class Projector(nn.Module):
    """Conv in -> resample by an integer ratio (strided 'patchify' conv, or nearest
    upsampling + conv) -> residual blocks -> conv out."""

    def __init__(self, in_ch: int, out_ch: int, src: int, dst: int, width: int = 64, depth: int = 2):
        super().__init__()
        direction, r = resolution_ratio(src, dst, "the projector input to the Teacher latent")
        layers: list[nn.Module] = [nn.Conv2d(in_ch, width, 3, padding=1)]
        if direction == "down" and r > 1:
            layers += [nn.SiLU(), nn.Conv2d(width, width, r, stride=r)]
        elif direction == "up" and r > 1:
            layers += [nn.Upsample(scale_factor=r, mode="nearest"), nn.Conv2d(width, width, 3, padding=1)]
        layers += [ResBlock(width) for _ in range(depth)]
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if width % g == 0)
        layers += [nn.GroupNorm(groups, width), nn.SiLU(), nn.Conv2d(width, out_ch, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Bridge(nn.Module):
    """The common interface of every variant: `forward(z_s, clamp) -> z_t`; only
    `projector` (if any) has trainable weights. `Bridge(..., cfg)` builds the variant
    `cfg.kind` names (one subclass per kind, registered in `_VARIANTS`)."""

    kind = ""

    def __new__(cls, *args, **kwargs):
        if cls is Bridge:   # copy / pickle call __new__ on the subclass without arguments
            cfg = kwargs.get("cfg", args[4] if len(args) > 4 else None)
            cls = _VARIANTS[(cfg or BridgeConfig()).validate().kind]
        return super().__new__(cls)

    def __init__(self, student: LatentSpace, teacher: LatentSpace, student_res: int, teacher_res: int,
                 cfg: BridgeConfig | None = None):
        super().__init__()
        self.cfg = (cfg or BridgeConfig(self.kind)).validate()
        if self.cfg.kind != self.kind:
            raise CrossdistillError(f"{type(self).__name__} is the {self.kind!r} Bridge, but its config says "
                                    f"kind={self.cfg.kind!r}; build it as Bridge(..., cfg)")
        self.student, self.teacher = student, teacher
        self.student_res, self.teacher_res = student_res, teacher_res
        self.student_shape = student.latent_shape(student_res, student_res)
        self.teacher_shape = teacher.latent_shape(teacher_res, teacher_res)
        self.projector: Projector | None = None
        # frozen parts are not submodules: they are never trained, saved or wrapped for DDP here
        for vae in (student.vae, teacher.vae):
            vae.requires_grad_(False)

    @property
    def trainable(self) -> bool:
        return self.projector is not None

    @property
    def reads_pixels(self) -> bool:
        """Whether `forward` reads the decoded Student image D_s(z_s) (and so takes `decoded`)."""
        return False

    def forward(self, z_s: Tensor, clamp: str = "none", decoded: Tensor | None = None) -> Tensor:
        """`clamp`: how decoded Student pixels are limited to [-1, 1] (`clamp_pixels`)
        where a variant decodes them; `decoded`: D_s(z_s) when the caller has it."""
        raise NotImplementedError

    def state_dict_trainable(self) -> dict[str, Tensor]:
        return {} if self.projector is None else self.projector.state_dict()


class IdentityBridge(Bridge):
    """Shared latent space: B(z_s) = z_s."""

    kind = "identity"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.student_shape != self.teacher_shape:
            raise CrossdistillError(f"identity bridge needs a shared latent space; Student latent "
                                    f"{self.student_shape} != Teacher latent {self.teacher_shape}")

    def forward(self, z_s: Tensor, clamp: str = "none", decoded: Tensor | None = None) -> Tensor:
        return z_s


class RoundtripBridge(Bridge):
    """The exact pixel round trip B(z_s) = E_t(up(clamp(D_s(z_s)))); nothing learned."""

    kind = "roundtrip"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        resolution_ratio(self.student_res, self.teacher_res, "the Student image to the Teacher image")

    reads_pixels = True

    def forward(self, z_s: Tensor, clamp: str = "none", decoded: Tensor | None = None) -> Tensor:
        """Always clamps (hard when `clamp` is "none"): the Teacher's encoder saw only images."""
        img = self.student.decode(z_s) if decoded is None else decoded
        if self.teacher_res != self.student_res:
            img = F.interpolate(img, size=(self.teacher_res, self.teacher_res), mode="bilinear",
                                align_corners=False, antialias=self.teacher_res < self.student_res)
        return self.teacher.encode(clamp_pixels(img, "hard" if clamp == "none" else clamp))


class ProjectorOnlyBridge(Bridge):
    """B(z_s) = P(z_s): the learned projector without the decoder prior (ablation)."""

    kind = "projector_only"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        (s_ch, s_h, _), (t_ch, t_h, _) = self.student_shape, self.teacher_shape
        self.projector = Projector(s_ch, t_ch, s_h, t_h, self.cfg.width, self.cfg.depth)

    def forward(self, z_s: Tensor, clamp: str = "none", decoded: Tensor | None = None) -> Tensor:
        return self.projector(z_s)


class DecoderBridge(Bridge):
    """The paper's Bridge, B(z_s) = P(D_s(z_s)): the frozen Student decoder (its pixels, or
    the feature map before its output head) followed by the learned projector."""

    kind = "bridge"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        in_ch = 3 if self.cfg.tap == "pixels" else self.student.vae.config.block_out_channels[0]
        self.projector = Projector(in_ch, self.teacher_shape[0], self.student_res, self.teacher_shape[1],
                                   self.cfg.width, self.cfg.depth)
        self._tap = self._pixels if self.cfg.tap == "pixels" else self._features

    @property
    def reads_pixels(self) -> bool:
        return self.cfg.tap == "pixels"

    def _pixels(self, z_s: Tensor, clamp: str, decoded: Tensor | None) -> Tensor:
        return clamp_pixels(self.student.decode(z_s) if decoded is None else decoded, clamp)

    def _features(self, z_s: Tensor, clamp: str, decoded: Tensor | None) -> Tensor:
        """The decoder's last feature map (input of its output norm); not clamped. It
        decodes z_s itself: the hook must see the decoder run."""
        feats = {}
        hook = self.student.vae.decoder.conv_norm_out.register_forward_hook(
            lambda m, inp, out: feats.setdefault("x", inp[0]))
        try:
            self.student.decode(z_s)
        finally:
            hook.remove()
        return feats["x"]

    def forward(self, z_s: Tensor, clamp: str = "none", decoded: Tensor | None = None) -> Tensor:
        return self.projector(self._tap(z_s, clamp, decoded).to(next(self.projector.parameters()).dtype))


_VARIANTS: dict[str, type[Bridge]] = {c.kind: c for c in (DecoderBridge, ProjectorOnlyBridge, RoundtripBridge,
                                                          IdentityBridge)}
assert set(_VARIANTS) == set(KINDS)
