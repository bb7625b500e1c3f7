"""A Bridge on disk: `bridge.json` plus `projector.safetensors`, tied to the two latent
spaces it was trained for (loading it for another pair is refused)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..errors import CrossdistillError
from .model import Bridge, BridgeConfig


def save_bridge(bridge: Bridge, out: Path, teacher: str, student: str, config: dict | None = None,
                metrics: dict | None = None, name: str | None = None) -> None:
    """bridge.json (variant, resolutions, both spaces' signatures, model names, the training
    config and metrics), the projector's weights and the model card, written atomically."""
    from safetensors.torch import save_file

    from ..hub import write_card
    from ..io import atomic_dir

    with atomic_dir(out, overwrite=True) as tmp:
        if bridge.projector is not None:
            save_file({k: v.contiguous() for k, v in bridge.projector.state_dict().items()},
                      str(tmp / "projector.safetensors"))
        (tmp / "bridge.json").write_text(json.dumps({
            "bridge": asdict(bridge.cfg), "teacher": teacher, "student": student,
            "student_resolution": bridge.student_res, "teacher_resolution": bridge.teacher_res,
            "student_space": space_signature(bridge.student), "teacher_space": space_signature(bridge.teacher),
            "config": config, "metrics": metrics or {}, "name": name}, indent=1, default=str))
        write_card(tmp)


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


def load_bridge(path: Path, student, teacher) -> Bridge:
    """The Bridge saved in `path`, for these two models (frozen, eval mode)."""
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
