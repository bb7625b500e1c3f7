"""Model presets as data: JSON files naming each component's class and config.

`tiny/*.json` are random-weight test sizes; `full/*.json` are the published
architectures (no weights), buildable on the `meta` device to check shapes and
parameter counts of real Teacher/Student pairs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import CrossdistillError, choice_error

_ROOT = Path(__file__).parent


def preset_names() -> dict[str, Path]:
    return {p.stem: p for p in sorted(_ROOT.glob("*/*.json"))}


def load_preset(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        raise choice_error("preset", name, names)
    return json.loads(names[name].read_text())


def component_class(name: str):
    """A diffusers or transformers class by name (models, schedulers, tokenizers)."""
    import diffusers
    import transformers

    for lib in (diffusers, transformers):
        cls = getattr(lib, name, None)
        if cls is not None:
            return cls
    raise CrossdistillError(f"unknown component class {name!r} (not in diffusers or transformers)")


def build_component(spec: dict[str, Any] | None, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None):
    """Instantiate one component with random weights from its preset entry."""
    if spec is None:
        return None
    name = spec["_class_name"]
    if name == "WordTokenizer":
        from ..text import word_tokenizer
        return word_tokenizer(spec["words"], spec.get("style", "clip"), spec.get("model_max_length", 16))
    cls = component_class(name)
    config = dict(spec.get("config", {}))
    from diffusers import SchedulerMixin
    from transformers import PreTrainedModel

    if issubclass(cls, SchedulerMixin):
        return cls.from_config(config)
    # the default device/dtype contexts put parameters straight on `device` in `dtype`
    # ("meta": no memory; a 12B model in bf16 never exists in fp32 first)
    previous = torch.get_default_dtype()
    if dtype is not None and dtype.is_floating_point:
        torch.set_default_dtype(dtype)
    try:
        with torch.device(device or "cpu"):
            if issubclass(cls, PreTrainedModel):
                obj = cls(cls.config_class(**config))
            else:
                obj = cls.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    if dtype is not None and any(p.dtype != dtype for p in obj.parameters()):
        obj = obj.to(dtype)
    return obj.eval().requires_grad_(False)  # frozen unless a trainer says otherwise


def build_components(preset: dict[str, Any] | str, device=None, dtype=None,
                     omit: tuple[str, ...] = ()) -> dict[str, Any]:
    """All components of a preset; names in `omit` (e.g. "text_encoder_3") become None."""
    if isinstance(preset, str):
        preset = load_preset(preset)
    return {k: (None if k in omit else build_component(v, device, dtype))
            for k, v in preset["components"].items()}


# Config keys that set a width (channels, hidden sizes, head dims); depths (layer and
# block counts), latent channels, patch sizes and VAE factors are left alone.
_WIDTH_KEYS = ("block_out_channels", "cross_attention_dim", "joint_attention_dim", "caption_projection_dim",
               "pooled_projection_dim", "projection_class_embeddings_input_dim", "addition_time_embed_dim",
               "hidden_size", "intermediate_size", "projection_dim", "d_model", "d_ff", "d_kv")


_NARROW_WORDS = ["a", "an", "the", "of", "in", "on", "at", "with", "red", "green", "blue", "yellow", "circle",
                 "square", "triangle", "left", "right", "top", "bottom", "center", "photo", "cat", "dog"]


def narrow(preset: dict[str, Any] | str, k: int = 32, resolution: int | None = None) -> dict[str, Any]:
    """The preset with every width divided by `k` and every depth kept: full-size
    plumbing (real block counts, latent channels, patching, VAE factors, text-encoder
    pairing) at a size a CPU test can run. `resolution` replaces the default resolution."""
    import copy
    import math

    p = copy.deepcopy(load_preset(preset) if isinstance(preset, str) else preset)
    p.pop("architecture_only", None)
    comps = p["components"]
    for name in [n for n, c in comps.items() if n.startswith("tokenizer") and c is None]:
        # the real tokenizers are files on the hub; a word-level one of the same style stands in
        encoder = comps.get(name.replace("tokenizer", "text_encoder")) or {}
        t5 = encoder.get("_class_name", "").startswith("T5")
        length = p.get("defaults", {}).get("max_sequence_length", 256) if t5 else 77
        comps[name] = {"_class_name": "WordTokenizer", "style": "t5" if t5 else "clip",
                       "model_max_length": length, "words": _NARROW_WORDS}
    for comp in p["components"].values():
        cfg = (comp or {}).get("config")
        if not cfg:
            continue
        for key in _WIDTH_KEYS:
            if key in cfg:
                cfg[key] = [max(1, v // k) for v in cfg[key]] if isinstance(cfg[key], list) else max(1, cfg[key] // k)
        if "norm_num_groups" in cfg:
            cfg["norm_num_groups"] = 1
        if comp["_class_name"] == "FluxTransformer2DModel":
            # RoPE axes fix the head dim; narrow by heads instead
            cfg["num_attention_heads"] = max(1, cfg["num_attention_heads"] // k)
        elif comp["_class_name"] == "SD3Transformer2DModel":
            # fewer heads of the real head dim (many 2-wide heads cost the same attention maps)
            cfg["num_attention_heads"] = max(1, cfg["num_attention_heads"] // k)
            cfg["caption_projection_dim"] = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        elif comp["_class_name"] == "UNet2DConditionModel":
            heads = cfg.get("attention_head_dim", 8)
            chans = cfg["block_out_channels"]
            if isinstance(heads, int) and any(c % heads for c in chans):
                cfg["attention_head_dim"] = math.gcd(*chans)
        if "sample_size" in cfg and resolution and comp["_class_name"] == "AutoencoderKL":
            cfg["sample_size"] = resolution
    if resolution:
        p.setdefault("defaults", {})["resolution"] = resolution
    return p
