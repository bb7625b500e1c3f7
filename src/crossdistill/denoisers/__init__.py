"""Denoiser adapters, one per model family, and how to load or build them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import CrossdistillError, choice_error, first_line
from ..presets import build_components, load_preset
from .base import DEFAULTS_FILE, Conditioning, Defaults, Denoiser
from .flux import FluxDenoiser
from .sd3 import SD3Denoiser
from .sd15 import SD15Denoiser
from .sdxl import SDXLDenoiser

FAMILIES: dict[str, type[Denoiser]] = {c.family: c for c in (SD15Denoiser, SDXLDenoiser, SD3Denoiser, FluxDenoiser)}
_BY_PIPELINE = {c.pipeline_class: c for c in FAMILIES.values()}

__all__ = ["FAMILIES", "Conditioning", "Defaults", "Denoiser", "build_denoiser", "family_class",
           "load_denoiser"]


def family_class(family: str) -> type[Denoiser]:
    if family not in FAMILIES:
        raise choice_error("family", family, FAMILIES)
    return FAMILIES[family]


def build_denoiser(preset: str | dict[str, Any], seed: int | None = 0, device=None, dtype=None,
                   omit: tuple[str, ...] = ()) -> Denoiser:
    """A randomly initialised model of a preset (`tiny-sd3`, `sd35-large` on device="meta", ...)."""
    if isinstance(preset, str):
        preset = load_preset(preset)
    cls = family_class(preset["family"])
    if seed is not None:
        torch.manual_seed(seed)
    components = build_components(preset, device=device, dtype=dtype, omit=omit)
    defaults = dict(cls.family_defaults.__dict__, **preset.get("defaults", {}))
    partial = preset.get("architecture_only", False) or bool(omit)   # omitted on purpose
    return cls(components, Defaults(**defaults), architecture_only=partial)


def _read_json(source: str, name: str, local_files_only: bool) -> dict | None:
    """A json file of a local folder or hub repo; None if the repo has no such file."""
    path = Path(source)
    if path.is_dir():
        f = path / name
        return json.loads(f.read_text()) if f.is_file() else None
    from ..hub_ids import is_hub_id

    if not is_hub_id(source):
        from ..presets import preset_names

        if source in preset_names():
            hub = load_preset(source).get("source")
            raise CrossdistillError(f"{source!r} is an architecture preset (random weights, no trained model), not a "
                                    f"model to load; give a diffusers folder or hub id"
                                    + (f", e.g. {hub}" if hub else ""))
        raise CrossdistillError(f"model folder not found: {source}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(source, name, local_files_only=local_files_only)).read_text())
    except RemoteEntryNotFoundError:  # the repo exists but has no such file
        return None
    except Exception as e:  # offline, unknown repo, no cache: one line, no traceback wall
        why = ("offline (HF_HUB_OFFLINE=1 or local_files_only) and not in the local Hugging Face cache"
               if local_files_only else f"hub unreachable, unknown repo or gated ({type(e).__name__})")
        raise CrossdistillError(f"cannot get {name} of {source!r}: not a local folder; {why}") from None


def load_denoiser(source: str | Path, family: str | None = None, dtype: torch.dtype | None = None,
                  device: str | torch.device | None = None, omit: tuple[str, ...] = (),
                  local_files_only: bool | None = None) -> Denoiser:
    """Load a diffusers pipeline folder or hub id as a denoiser adapter.

    `omit` names components not to load (e.g. `("text_encoder_3",)` for SD3 without
    T5); only components the family marks optional may be omitted. Only safetensors
    weights are accepted.
    """
    from ..artifacts import resolve

    source = resolve(source)
    if local_files_only is None:
        from ..hub_ids import offline

        local_files_only = offline()
    index = _read_json(source, "model_index.json", local_files_only)
    if index is None:
        saved = _read_json(source, DEFAULTS_FILE, local_files_only) or {}
        if "lora" in saved:   # a LoRA Student: its base, the adapter on the backbone, its scheduler
            return _load_lora(source, saved, dtype, device, local_files_only)
        raise CrossdistillError(f"{source} is not a diffusers pipeline folder (no model_index.json)")
    if family is None:
        pipe = index.get("_class_name")
        if pipe not in _BY_PIPELINE:
            raise choice_error("pipeline class", pipe, _BY_PIPELINE)
        cls = _BY_PIPELINE[pipe]
    else:
        cls = family_class(family)
    bad = [k for k in omit if k not in cls.optional]
    if bad:
        raise CrossdistillError(f"cannot omit {', '.join(bad)} from a {cls.family} model; "
                                f"optional: {', '.join(cls.optional) or 'none'}")
    components = {}
    for name in cls.components_used:
        entry = index.get(name)
        if name in omit or entry is None or entry[0] is None:
            components[name] = None
            continue
        components[name] = _load_component(source, name, entry[1], dtype, local_files_only)
    saved = _read_json(source, DEFAULTS_FILE, local_files_only) or {}
    defaults = dict(cls.family_defaults.__dict__, **saved.get("defaults", {}))
    den = cls(components, Defaults(**defaults))
    if device is not None:
        den.to(device)
    return den


def _load_lora(source: str, saved: dict, dtype, device, local_files_only: bool) -> Denoiser:
    """A LoRA Student exactly as vanilla diffusers loads it: the base pipeline,
    `load_lora_weights(source)` on its backbone, the folder's scheduler."""
    base = load_denoiser(saved["lora"]["base"], dtype=dtype, device=device, local_files_only=local_files_only)
    scheduler = _load_component(source, "scheduler", _read_json(source, "scheduler/scheduler_config.json",
                                                                 local_files_only)["_class_name"],
                                None, local_files_only)
    try:
        base.to_pipeline().load_lora_weights(source, local_files_only=local_files_only)
    except Exception as e:
        raise CrossdistillError(f"cannot load the LoRA weights of {source}: {first_line(e)}") from None
    if device is not None:
        base.to(device)
    return type(base)(dict(base.components, scheduler=scheduler),
                      Defaults(**dict(base.family_defaults.__dict__, **saved.get("defaults", {}))))


def _load_component(source: str, name: str, class_name: str, dtype, local_files_only: bool):
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    from ..presets import component_class

    cls = component_class(class_name)
    kwargs: dict[str, Any] = {"subfolder": name, "local_files_only": local_files_only}
    if issubclass(cls, (ModelMixin, PreTrainedModel)):
        kwargs["use_safetensors"] = True   # never unpickle
        if dtype is not None:
            kwargs["torch_dtype" if issubclass(cls, ModelMixin) else "dtype"] = dtype
    sub = Path(source) / name
    if sub.is_dir() and not any(sub.glob("*.safetensors")):
        pickled = sorted(f.name for f in sub.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        if pickled:
            raise CrossdistillError(f"component '{name}' of {source} has only pickle weights ({', '.join(pickled)}); "
                                    f"refused: safetensors only (convert them with safetensors' convert script)")
    try:
        obj = cls.from_pretrained(source, **kwargs)
    except Exception as e:
        raise CrossdistillError(f"cannot load component '{name}' ({class_name}) of {source}: {first_line(e)}") \
            from None
    if isinstance(obj, torch.nn.Module):
        obj.eval().requires_grad_(False)   # frozen unless a trainer says otherwise
    return obj
