"""What a finished stage-2 run leaves for users: RUN/student, a diffusers pipeline folder
(or diffusers LoRA weights on the Student base) with its model card."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..config import to_dict
from ..denoisers import Denoiser
from ..denoisers.base import DEFAULTS_FILE
from ..io import atomic_dir
from .config import ExportConfig
from .diagnostics import last_logged
from .generator import student_scheduler


def export_run(task, run_dir: Path) -> None:
    """The EMA generator of a `DistillTask` as RUN/student, with the run's provenance."""
    cfg = task.cfg
    logs = last_logged(run_dir / "history.jsonl")
    models = [tc.model for tc in cfg.teachers]
    provenance = {"name": run_dir.resolve().name, "teacher": models[0],   # the first (app, card)
                  "teachers": models, "student": cfg.student,
                  "bridge": " + ".join(tc.bridge_dir for tc in cfg.teachers),
                  "license": cfg.export.license, "fp16_variant": cfg.export.fp16_variant,
                  "config": to_dict(cfg), "metrics": {f"train/{k}": v for k, v in logs.items()}}
    if task.lora:
        export_lora_student(task.student, task.ema, run_dir / "student", cfg.student, task.s_res, provenance,
                            steps=task.generator.steps)
    else:
        export_student(task.student, task.ema, run_dir / "student", task.s_res, provenance, cfg.export,
                       steps=task.generator.steps)


def _defaults(student: Denoiser, steps: int, resolution: int | None):
    """The exported model's sampling defaults: its own steps, no CFG, the run's resolution."""
    return dataclasses.replace(student.defaults, steps=steps, guidance=0.0,
                               resolution=resolution or student.defaults.resolution)


def export_student(student: Denoiser, weights: torch.nn.Module, out: Path, resolution: int | None = None,
                   provenance: dict | None = None, export: ExportConfig | None = None, steps: int = 1) -> None:
    """A standard StableDiffusionPipeline folder whose scheduler reproduces the generator
    exactly (1 step: DDIM; K steps: LCMScheduler), with its model card (README.md); on
    request the fp16 variant and the UNet alone as one file."""
    from ..hub import write_card

    export = export or ExportConfig()
    comps = dict(student.components, **{student.backbone: weights, "scheduler": student_scheduler(student, steps)})
    exported = type(student)(comps, _defaults(student, steps, resolution))
    sizes = {name: sum(p.numel() * p.element_size() for p in m.parameters()) for name, m in exported.modules()}
    needed = sum(sizes.values()) * (1.5 if export.fp16_variant else 1) \
        + (sizes[student.backbone] if export.unet_file else 0)   # a full disk says how much the folder needed
    with atomic_dir(out, overwrite=True, needed=int(needed)) as tmp:
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

    from ..hub import write_card

    layers = {k: v.detach().contiguous() for k, v in
              get_peft_model_state_dict(weights, adapter_name="student").items()}
    with atomic_dir(out, overwrite=True) as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers, safe_serialization=True)
        student_scheduler(student, steps).save_pretrained(tmp / "scheduler")
        (tmp / DEFAULTS_FILE).write_text(json.dumps(
            {"family": student.family, "defaults": dataclasses.asdict(_defaults(student, steps, resolution)),
             "lora": {"base": base, "rank": next(iter(weights.peft_config.values())).r},
             "provenance": dict(provenance or {}, lora=True)}, indent=1, default=str))
        write_card(tmp)
