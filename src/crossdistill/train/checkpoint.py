"""One checkpoint object per step: trainable weights + optimizer state, safetensors only.

A checkpoint is a folder `ckpt-0000100/` written under a temporary name and renamed
into place (atomic), holding `state.safetensors` and `manifest.json` (step, tensor
count, sha256 of the weights file). Resuming takes the newest checkpoint whose
manifest verifies; a truncated or corrupted one is reported and skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .parallel import full, like

PREFIX = "ckpt-"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def flatten_state(modules: dict[str, torch.nn.Module],
                  optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict[str, Tensor], dict]:
    """Tensors keyed `module/<name>/<param>`, `optim/<name>/<idx>/<key>`; the rest as JSON.
    Sharded (FSDP) tensors are stored whole: with any, every process must call this."""
    tensors: dict[str, Tensor] = {}
    meta: dict = {"optim": {}}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            tensors[f"module/{name}/{k}"] = full(v).detach().contiguous().cpu()
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        for idx, st in sd["state"].items():
            for k, v in st.items():
                t = v if torch.is_tensor(v) else torch.tensor(v)
                tensors[f"optim/{name}/{idx}/{k}"] = full(t).detach().contiguous().cpu()
        meta["optim"][name] = sd["param_groups"]
    return tensors, meta


def restore_state(tensors: dict[str, Tensor], meta: dict, modules, optimizers) -> None:
    for name, m in modules.items():
        prefix = f"module/{name}/"
        current = m.state_dict()
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        m.load_state_dict({k: like(current[k], v) if k in current else v for k, v in sd.items()})
    for name, opt in optimizers.items():
        prefix = f"optim/{name}/"
        params = [p for g in opt.param_groups for p in g["params"]]   # the state's indices
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith(prefix):
                idx, key = k[len(prefix):].split("/", 1)
                p = params[int(idx)]
                # moments of a sharded parameter: this process's shard (step counters stay whole)
                state.setdefault(int(idx), {})[key] = like(p, v) if v.shape == p.shape and v.ndim else v
        opt.load_state_dict({"state": state, "param_groups": meta["optim"][name]})


def save_checkpoint(run_dir: Path, step: int, modules, optimizers, keep: int = 2,
                    state: tuple[dict[str, Tensor], dict] | None = None) -> Path:
    """Write the checkpoint for `step` (`state`: a `flatten_state` result gathered by
    every process beforehand, when weights are sharded)."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    final = run_dir / f"{PREFIX}{step:07d}"
    tmp = run_dir / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors, meta = state if state is not None else flatten_state(modules, optimizers)
    save_file(tensors, str(tmp / "state.safetensors"))
    manifest = {"step": step, "tensors": len(tensors), "sha256": _sha256(tmp / "state.safetensors"), **meta}
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in sorted(run_dir.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _verified(ckpt: Path) -> dict | None:
    try:
        manifest = json.loads((ckpt / "manifest.json").read_text())
        if _sha256(ckpt / "state.safetensors") != manifest["sha256"]:
            raise ValueError("weights do not match the manifest's sha256")
        return manifest
    except Exception as e:
        warnings.warn(f"checkpoint {ckpt} is unreadable ({type(e).__name__}: {e}); trying an older one")
        return None


def load_latest(run_dir: Path, modules, optimizers) -> tuple[int, str | None]:
    """Restore the newest valid checkpoint; returns (its step, its folder name), or (0, None)."""
    from safetensors.torch import load_file

    for ckpt in sorted(Path(run_dir).glob(f"{PREFIX}*"), reverse=True):
        manifest = _verified(ckpt)
        if manifest is None:
            continue
        tensors = load_file(str(ckpt / "state.safetensors"))
        restore_state(tensors, manifest, modules, optimizers)
        return int(manifest["step"]), ckpt.name
    return 0, None
