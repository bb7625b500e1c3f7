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
    return {p.stem: p for sub in ("tiny", "full", "shapes") for p in sorted((_ROOT / sub).glob("*.json"))}


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
