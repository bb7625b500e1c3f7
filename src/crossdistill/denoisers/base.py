"""One denoiser contract for every model family.

A `Denoiser` wraps a diffusers backbone (UNet or MM-DiT), its text encoders, its VAE
(as a `LatentSpace`) and its default scheduler, and speaks in normalised spatial
latents (B, C, h, w) everywhere. Each family's schedule, parameterisation and text
encoding live in its subclass; samplers and losses only use the methods below.

Time `t` is the family's native noise level: a DDPM step index in [0, T) for VP
families (sd15, sdxl), sigma in [0, 1] for rectified-flow families (sd3, flux).
"""

from __future__ import annotations

import copy
import inspect
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import CrossdistillError
from ..spaces import LatentSpace


@dataclass
class Conditioning:
    """Text conditioning of a batch; every tensor has the batch first."""

    embeds: Tensor                      # (B, L, D) token sequence for cross / joint attention
    pooled: Tensor | None = None        # (B, D) pooled text vector (SDXL, SD3, Flux)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def _map(self, fn) -> "Conditioning":
        return Conditioning(fn(self.embeds), None if self.pooled is None else fn(self.pooled))

    def repeat_interleave(self, n: int) -> "Conditioning":
        return self._map(lambda x: x.repeat_interleave(n, dim=0))

    def index(self, idx: Tensor) -> "Conditioning":
        return self._map(lambda x: x[idx.to(x.device)])

    def expand(self, n: int) -> "Conditioning":
        """A batch-1 conditioning repeated to batch n."""
        if len(self) == n:
            return self
        if len(self) != 1:
            raise ValueError(f"cannot expand a conditioning of batch {len(self)} to {n}")
        return self.repeat_interleave(n)

    def cat(self, other: "Conditioning") -> "Conditioning":
        pooled = None if self.pooled is None else torch.cat([self.pooled, other.pooled])
        return Conditioning(torch.cat([self.embeds, other.embeds]), pooled)

    def to(self, *args, **kwargs) -> "Conditioning":
        return self._map(lambda x: x.to(*args, **kwargs))


@dataclass
class Defaults:
    """Inference defaults of a model (the family's, overridden by a preset or a saved folder)."""

    steps: int = 50
    guidance: float = 7.5
    resolution: int = 512
    max_sequence_length: int | None = None   # T5 tokens (SD3: 256, Flux: 512)
    domain: str | None = None                # a registered domain (crossdistill.domains): prompts must follow its grammar


DEFAULTS_FILE = "crossdistill.json"


class Denoiser:
    """Base of the family adapters. Subclasses set the class attributes and fill in
    text encoding, the schedule (`add_noise`, `to_x0`, `target`, `sample_timesteps`)
    and `model_output`."""

    family: ClassVar[str]
    pipeline_class: ClassVar[str]            # the diffusers pipeline this family mirrors
    backbone: ClassVar[str]                  # component name of the denoising network
    components_used: ClassVar[tuple[str, ...]]
    optional: ClassVar[tuple[str, ...]] = () # components that may be absent (None)
    patch: ClassVar[int] = 1                 # latent token packing of the family (Flux: 2)
    family_defaults: ClassVar[Defaults] = Defaults()

    def __init__(self, components: dict[str, Any], defaults: Defaults | dict | None = None,
                 architecture_only: bool = False):
        missing = [k for k in self.components_used
                   if components.get(k) is None and k not in self.optional]
        if missing and not architecture_only:  # full-size presets ship no tokenizers
            raise CrossdistillError(f"{self.family} model is missing components: {', '.join(missing)}")
        self.components = {k: components.get(k) for k in self.components_used}
        self.model = self.components[self.backbone]
        self.scheduler = self.components["scheduler"]
        vae = self.components.get("vae")
        self.space = LatentSpace(vae, self.patch) if vae is not None else None
        if isinstance(defaults, dict):
            defaults = Defaults(**defaults)
        self.defaults = defaults or replace(self.family_defaults)
        self._uncond: Conditioning | None = None

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return f"{type(self).__name__}({self.backbone}={n / 1e6:.2f}M params, space={self.space})"

    # -- housekeeping -------------------------------------------------------------
    def modules(self) -> Iterator[tuple[str, torch.nn.Module]]:
        for k, v in self.components.items():
            if isinstance(v, torch.nn.Module):
                yield k, v

    def to(self, device=None, dtype=None) -> "Denoiser":
        kw = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for _, m in self.modules():
            if kw:
                m.to(**kw)
        self._uncond = None
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def with_components(self, **replaced) -> "Denoiser":
        """A new adapter of the same family and defaults with some components swapped."""
        return type(self)(dict(self.components, **replaced), self.defaults)

    @property
    def token_patch(self) -> int:
        """Latent pixels per side of one backbone token (packing x the backbone's patch)."""
        return self.patch * self._backbone_patch()

    @property
    def resolution_multiple(self) -> int:
        """Image sizes must be multiples of this (VAE factor x token patch)."""
        return self.space.factor * self.token_patch

    def _backbone_patch(self) -> int:
        if self.model is None:   # built without its backbone (e.g. only the VAE of a full-size preset)
            return 1
        return int(getattr(self.model.config, "patch_size", 1) or 1)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        m = self.resolution_multiple
        for name, size in (("height", height), ("width", width)):
            if size <= 0 or size % m:
                raise CrossdistillError(
                    f"image {name} {size} is not a positive multiple of {m} for this {self.family} model "
                    f"(VAE factor {self.space.factor} x patch {self.token_patch})")
        return self.space.latent_shape(height, width)

    # -- text -----------------------------------------------------------------------
    def encode_prompt(self, prompts: list[str]) -> Conditioning:
        raise NotImplementedError

    def dummy_conditioning(self, n: int, device=None, dtype=None) -> Conditioning:
        """Random conditioning of the exact shapes the backbone takes (benchmarks and
        shape checks of full-size models without text encoders)."""
        length, width, pooled = self._conditioning_shape()
        kw = {"device": device or self.device, "dtype": dtype or self.dtype}
        return Conditioning(torch.randn(n, length, width, **kw),
                            torch.randn(n, pooled, **kw) if pooled else None)

    def _conditioning_shape(self) -> tuple[int, int, int | None]:
        raise NotImplementedError

    def uncond(self, n: int = 1) -> Conditioning:
        """The unconditional (empty-prompt) conditioning, repeated to batch n."""
        if self._uncond is None:
            with torch.no_grad():
                self._uncond = self._encode_uncond()
        return self._uncond.expand(n)

    def encode_table(self, prompts: list[str]) -> tuple[Conditioning, Tensor]:
        """Each distinct prompt encoded once, and the row of each prompt in that table."""
        uniq = sorted(set(prompts))
        where = {p: i for i, p in enumerate(uniq)}
        return self.encode_prompt(uniq), torch.tensor([where[p] for p in prompts])

    def _encode_uncond(self) -> Conditioning:
        return self.encode_prompt([""])

    @staticmethod
    def _tokens(tokenizer, prompts: list[str], max_length: int) -> Tensor:
        return tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                         return_tensors="pt").input_ids

    def word_positions(self, prompt: str) -> list[list[int]]:
        """For each whitespace word of `prompt`, its token positions on the sequence axis
        of `encode_prompt([prompt]).embeds`, i.e. among the text keys of the attention maps
        (evaluation of per-object maps). Families place their encoders' tokens differently."""
        raise CrossdistillError(f"the {self.family} adapter does not map prompt words to text tokens")

    def caption_mask(self, prompts: list[str], length: int) -> Tensor:
        """(B, length) bool: True on the text positions that hold the caption's own tokens
        (start, end and padding tokens excluded), from `word_positions`."""
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        memo: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            if p not in memo:
                memo[p] = [j for word in self.word_positions(p) for j in word if j < length]
            mask[i, memo[p]] = True
        return mask

    # -- schedule (family-specific) -------------------------------------------------
    parameterization: str

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        raise NotImplementedError

    def to_x0(self, x_t: Tensor, t: Tensor, output: Tensor) -> Tensor:
        raise NotImplementedError

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network is trained to output at (x_t, t)."""
        raise NotImplementedError

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None,
                         lo: float = 0.0, hi: float = 1.0, density: str = "uniform") -> Tensor:
        """Training times; `lo`/`hi` trim the range as fractions of the family's full range."""
        raise NotImplementedError

    def time_at(self, frac: Tensor) -> Tensor:
        """Native times at fractions of the family's range (0: clean end, 1: noisiest)."""
        raise NotImplementedError

    @property
    def t_max(self) -> Tensor:
        """The noisiest native time (where a one-step generator starts)."""
        raise NotImplementedError

    def model_output(self, x_t: Tensor, t: Tensor, cond: Conditioning,
                     guidance: float | None = None) -> Tensor:
        """The raw network output in the family's parameterisation, spatial layout.
        `guidance` is only read by guidance-embedded networks (Flux-dev)."""
        raise NotImplementedError

    def attention_sites(self) -> list:
        """The backbone's attention layers as `attention.AttentionSite`s, in depth order."""
        raise NotImplementedError

    # -- shared by all families ------------------------------------------------------
    def guided_output(self, x_t: Tensor, t: Tensor, cond: Conditioning,
                      guidance: float | None = None, uncond: Conditioning | None = None) -> Tensor:
        """Classifier-free guidance, `out_u + w (out_c - out_u)`, with the model's own
        empty-prompt conditioning; w <= 1 means a single conditional call. `guidance`: one
        number, or a tensor of one per sample (stage 2's guidance interval)."""
        w = self.defaults.guidance if guidance is None else guidance
        if not torch.is_tensor(w):
            w = float(w)
        if (w <= 1.0 if isinstance(w, float) else bool((w <= 1.0).all())):
            return self.model_output(x_t, t, cond)
        uncond = self.uncond(len(x_t)) if uncond is None else uncond
        out = self.model_output(torch.cat([x_t, x_t]), torch.cat([t, t]), uncond.cat(cond))
        out_u, out_c = out.chunk(2)
        if torch.is_tensor(w):   # per sample: broadcast over the rest
            w = w.to(out_c.device, out_c.dtype).reshape(-1, *[1] * (out_c.ndim - 1))
        return out_u + w * (out_c - out_u)

    def predict_x0(self, x_t: Tensor, t: Tensor, cond: Conditioning,
                   guidance: float | None = None, uncond: Conditioning | None = None) -> Tensor:
        return self.to_x0(x_t, t, self.guided_output(x_t, t, cond, guidance, uncond))

    def loss(self, x0: Tensor, cond: Conditioning, generator: torch.Generator | None = None,
             density: str = "uniform", lo: float = 0.0, hi: float = 1.0,
             t: Tensor | None = None, noise: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """The family's own denoising loss: MSE between the network output and its target,
        at times drawn from [lo, hi] of the family's range (or the given `t`, `noise`)."""
        if t is None:
            t = self.sample_timesteps(len(x0), generator, lo=lo, hi=hi, density=density)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator)
        t, noise = t.to(x0.device), noise.to(x0.device, x0.dtype)
        out = self.model_output(self.add_noise(x0, t, noise), t, cond)
        loss = F.mse_loss(out.float(), self.target(x0, noise, t).float())
        return loss, {"loss": loss.item()}

    # -- multi-step sampling with the family's default scheduler -------------------
    def _set_timesteps(self, scheduler, steps: int, shape: tuple[int, ...]) -> None:
        scheduler.set_timesteps(steps, device=self.device)

    def _native_t(self, scheduler, i: int, t: Tensor) -> Tensor:
        return t

    @torch.no_grad()
    def sample(self, cond: Conditioning | list[str], steps: int | None = None,
               guidance: float | None = None, generator: torch.Generator | None = None,
               height: int | None = None, width: int | None = None,
               n_per_prompt: int = 1, progress: bool = False, latents: Tensor | None = None) -> Tensor:
        """Multi-step sampling as the family's diffusers pipeline does it; returns
        normalised latents (B * n_per_prompt, C, h, w). `latents`: the initial unit
        Gaussian noise (drawn with `generator` if None). `generator` (one, or one per image
        as diffusers takes them) also feeds a stochastic scheduler's noise (LCM's re-noising)."""
        if isinstance(cond, list):
            cond = self.encode_prompt(cond)
        cond = cond.repeat_interleave(n_per_prompt)
        steps = steps or self.defaults.steps
        height = height or self.defaults.resolution
        width = width or self.defaults.resolution
        shape = (len(cond),) + self.latent_shape(height, width)
        scheduler = copy.deepcopy(self.scheduler)
        self._set_timesteps(scheduler, steps, shape)
        if latents is None and isinstance(generator, list):
            latents = torch.stack([torch.randn(shape[1:], generator=g, device=g.device) for g in generator])
        elif latents is None:
            latents = torch.randn(shape, generator=generator, dtype=self.dtype,
                                  device=generator.device if generator else "cpu")
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents of shape {tuple(latents.shape)}, expected {shape}")
        x = latents.to(self.device, self.dtype) * getattr(scheduler, "init_noise_sigma", 1.0)
        w = self.defaults.guidance if guidance is None else float(guidance)
        uncond = self.uncond(len(cond)) if w > 1.0 else None    # no empty-prompt pass without CFG
        timesteps = scheduler.timesteps
        stochastic = "generator" in inspect.signature(scheduler.step).parameters
        step_kw = {"generator": generator} if stochastic and generator is not None else {}
        it = enumerate(timesteps)
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(it, total=len(timesteps), desc=f"{self.family} sampling", leave=False)
        for i, t in it:
            x_in = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
            t_native = self._native_t(scheduler, i, t).to(self.device).expand(len(x))
            out = self.guided_output(x_in, t_native, cond, guidance, uncond)
            x = scheduler.step(out, t, x, return_dict=False, **step_kw)[0]
        return x

    @torch.no_grad()
    def generate(self, prompts: list[str], **kwargs) -> Tensor:
        """Images in [0, 1], (B, 3, H, W)."""
        z = self.sample(prompts, **kwargs)
        return (self.space.decode(z).float() / 2 + 0.5).clamp(0, 1)

    # -- diffusers interop ----------------------------------------------------------
    def pipeline_extras(self) -> dict[str, Any]:
        return {}

    def to_pipeline(self):
        """The equivalent diffusers pipeline, sharing these components (no copies)."""
        import diffusers

        cls = getattr(diffusers, self.pipeline_class)
        return cls(**self.components, **self.pipeline_extras())

    def save_pretrained(self, path: str | Path, provenance: dict | None = None) -> None:
        """A standard diffusers folder (safetensors) plus our inference defaults (and, for a
        trained model, where it came from: the model card is rendered from it)."""
        path = Path(path)
        self.to_pipeline().save_pretrained(path, safe_serialization=True)
        info = {"family": self.family, "defaults": asdict(self.defaults)}
        if provenance is not None:
            info["provenance"] = provenance
        (path / DEFAULTS_FILE).write_text(json.dumps(info, indent=1, default=str))

    def save_variant(self, path: str | Path, dtype: torch.dtype, variant: str) -> None:
        """Every weight component again in `dtype`, as diffusers' `variant` files beside the
        full-precision ones (`from_pretrained(..., variant=...)`); one component at a time."""
        path = Path(path)
        for name, module in self.modules():
            if hasattr(module, "save_pretrained"):
                copy.deepcopy(module).to(dtype).save_pretrained(path / name, variant=variant, safe_serialization=True)
