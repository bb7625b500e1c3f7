"""One checkpoint object per step: trainable weights + optimizer state, safetensors only.

A checkpoint is a folder `ckpt-0000100/` written under a temporary name and renamed
into place (atomic), holding `manifest.json` (step, the sha256 of each weights file)
and either `state.safetensors` (one process) or, when FSDP shards the weights, one
`rank-<r>-of-<n>.safetensors` per process holding that process's rows of every sharded
tensor: nothing is gathered to save, and resuming on any number of processes reads
only the rows each needs. Resuming takes the newest checkpoint whose manifest
verifies; a truncated or corrupted one is reported and skipped.
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

from ..io import disk_error, is_disk_full
from .parallel import is_sharded

PREFIX = "ckpt-"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def flatten_state(modules: dict[str, torch.nn.Module],
                  optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict[str, Tensor], dict]:
    """Whole tensors keyed `module/<name>/<param>`, `optim/<name>/<idx>/<key>`; the rest
    as JSON (one process: nothing is sharded)."""
    tensors, _, meta = local_state(modules, optimizers, writer=True)
    return tensors, meta


def _piece(t: Tensor) -> tuple[Tensor, int | None]:
    """(this process's rows of `t`, their offset on dim 0) for a DTensor sharded on dim 0
    (FSDP2's layout); (t, None) for a whole tensor."""
    if not is_sharded(t):
        return t, None
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if len(t.placements) != 1 or t.placements[0] != Shard(0):
        raise ValueError(f"sharded checkpoints handle dim-0 sharding on one mesh axis, got {t.placements}")
    _, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    return t.to_local(), int(offset[0])


def local_state(modules, optimizers, writer: bool) -> tuple[dict[str, Tensor], dict[str, list], dict]:
    """What this process writes: its rows of every sharded tensor, and (if `writer`, the
    main process) the whole tensors; `layout`: key -> [row offset, global shape] of each
    piece. Nothing is gathered."""
    tensors: dict[str, Tensor] = {}
    layout: dict[str, list] = {}
    meta: dict = {"optim": {}}

    def put(key, t):
        piece, offset = _piece(t)
        if offset is None and not writer:
            return
        tensors[key] = piece.detach().contiguous().cpu()
        if offset is not None:
            layout[key] = [offset, list(t.shape)]

    for name, m in modules.items():
        for k, v in m.state_dict().items():
            put(f"module/{name}/{k}", v)
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        for idx, st in sd["state"].items():
            for k, v in st.items():
                put(f"optim/{name}/{idx}/{k}", v if torch.is_tensor(v) else torch.tensor(v))
        meta["optim"][name] = sd["param_groups"]
    return tensors, layout, meta


class _Reader:
    """The tensors of a checkpoint, whole or by rows, whichever files hold them: one
    `state.safetensors`, or one file per process of a sharded run (each key's pieces
    placed by the `layout` in its header)."""

    def __init__(self, ckpt: Path, files: list[str]):
        from safetensors import safe_open

        self.ckpt, self.pieces, self.shapes = ckpt, {}, {}
        for name in files:
            with safe_open(str(ckpt / name), framework="pt") as f:
                layout = json.loads((f.metadata() or {}).get("layout", "{}"))
                for key in f.keys():
                    offset, shape = layout.get(key, [None, list(f.get_slice(key).get_shape())])
                    self.pieces.setdefault(key, []).append((name, offset))
                    self.shapes[key] = tuple(shape)

    def keys(self):
        return self.pieces.keys()

    def get(self, key: str, lo: int | None = None, hi: int | None = None) -> Tensor:
        """The whole tensor, or its rows [lo, hi) (read from the pieces that hold them)."""
        from safetensors import safe_open

        parts = []
        for name, offset in sorted(self.pieces[key], key=lambda p: p[1] or 0):
            with safe_open(str(self.ckpt / name), framework="pt") as f:
                if offset is None:   # a whole tensor: read only the rows asked for
                    return f.get_tensor(key) if lo is None else f.get_slice(key)[lo:hi]
                sl = f.get_slice(key)
                n = sl.get_shape()[0]
                a, b = (offset, offset + n) if lo is None else (max(lo, offset), min(hi, offset + n))
                if a < b:
                    parts.append(sl[a - offset:b - offset])
        if not parts:   # an empty shard (more processes than rows)
            return torch.empty(0, *self.shapes[key][1:])
        return torch.cat(parts)

    def value_for(self, key: str, ref: Tensor | None) -> Tensor:
        """The saved tensor laid out like `ref`: this process's rows if `ref` is sharded
        (only they are read), else whole."""
        if ref is None or not is_sharded(ref) or tuple(ref.shape) != self.shapes[key]:
            return self.get(key)
        from torch.distributed.tensor import DTensor

        _, offset = _piece(ref)
        n = ref.to_local().shape[0]
        piece = self.get(key, offset, offset + n).to(ref.device, ref.dtype)
        return DTensor.from_local(piece, ref.device_mesh, ref.placements, shape=ref.shape, stride=ref.stride())


def restore_state(reader: _Reader, meta: dict, modules, optimizers) -> None:
    """Load every module and optimizer, each tensor laid out as the current one (`value_for`)."""
    for name, m in modules.items():
        prefix = f"module/{name}/"
        current = m.state_dict()
        sd = {}
        for k in reader.keys():
            if k.startswith(prefix):
                sd[k[len(prefix):]] = reader.value_for(k, current.get(k[len(prefix):]))
        m.load_state_dict(sd)
    for name, opt in optimizers.items():
        prefix = f"optim/{name}/"
        params = [p for g in opt.param_groups for p in g["params"]]   # the state's indices
        state: dict[int, dict] = {}
        for k in reader.keys():
            if k.startswith(prefix):
                idx, key = k[len(prefix):].split("/", 1)
                p = params[int(idx)]
                # moments of a parameter take its layout (a sharded one: this process's rows);
                # step counters stay whole
                same = reader.shapes[k] == tuple(p.shape) and len(reader.shapes[k]) > 0
                state.setdefault(int(idx), {})[key] = reader.value_for(k, p if same else None)
        opt.load_state_dict({"state": state, "param_groups": meta["optim"][name]})


def _finish(tmp: Path, final: Path, manifest: dict, keep: int) -> Path:
    """Write the manifest last, rename the folder into place, drop the oldest checkpoints."""
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in sorted(final.parent.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(run_dir: Path, step: int, modules, optimizers, keep: int = 2) -> Path:
    """Write the checkpoint for `step` (one process, whole tensors)."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    final = run_dir / f"{PREFIX}{step:07d}"
    tmp = run_dir / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors, meta = flatten_state(modules, optimizers)
    try:
        save_file(tensors, str(tmp / "state.safetensors"))
        files = {"state.safetensors": _sha256(tmp / "state.safetensors")}
        return _finish(tmp, final, {"step": step, "tensors": len(tensors), "sha256": files["state.safetensors"],
                                    "files": files, **meta}, keep)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_disk_full(e):
            raise
        needed = sum(t.numel() * t.element_size() for t in tensors.values())
        raise disk_error(e, f"checkpoint {final.name}", run_dir, needed,
                         "the previous checkpoints are kept: free some space and rerun the same command to resume "
                         "from the newest") from None


def save_sharded_checkpoint(run_dir: Path, step: int, acc, modules, optimizers, keep: int = 2) -> Path:
    """Every process writes its own `rank-<r>-of-<n>.safetensors` (its rows of every sharded
    tensor; the main process also the whole ones) into one folder: no tensor is gathered
    on any process. A collective: every process calls it. The main process writes the
    manifest (each file's sha256) and renames the folder into place."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    final = run_dir / f"{PREFIX}{step:07d}"
    tmp = run_dir / f".{final.name}.tmp"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    tensors, layout, meta = local_state(modules, optimizers, writer=acc.is_main_process)
    name = f"rank-{acc.process_index:05d}-of-{acc.num_processes:05d}.safetensors"
    save_file(tensors, str(tmp / name), metadata={"layout": json.dumps(layout)})
    (tmp / f"{name}.sha256").write_text(_sha256(tmp / name))
    acc.wait_for_everyone()
    if acc.is_main_process:
        files = {}
        for f in sorted(tmp.glob("rank-*.safetensors")):
            files[f.name] = (tmp / f"{f.name}.sha256").read_text()
            (tmp / f"{f.name}.sha256").unlink()
        _finish(tmp, final, {"step": step, "processes": acc.num_processes, "files": files, **meta}, keep)
    acc.wait_for_everyone()
    return final


def _manifest(ckpt: Path) -> dict | None:
    try:
        manifest = json.loads((ckpt / "manifest.json").read_text())
        manifest.setdefault("files", {"state.safetensors": manifest.get("sha256")})   # older checkpoints
        return manifest
    except Exception as e:
        warnings.warn(f"checkpoint {ckpt} is unreadable ({type(e).__name__}: {e}); trying an older one")
        return None


def _verified(ckpt: Path, manifest: dict, files: list[str]) -> bool:
    try:
        for name in files:
            if _sha256(ckpt / name) != manifest["files"][name]:
                raise ValueError(f"{name} does not match the manifest's sha256")
        return True
    except Exception as e:
        warnings.warn(f"checkpoint {ckpt} is unreadable ({type(e).__name__}: {e}); trying an older one")
        return False


def _files_to_check(manifest: dict, process: int, processes: int) -> list[str]:
    """Each process hashes what it reads: resuming on as many processes as wrote the
    checkpoint, its own file and the main process's (the whole tensors); otherwise all."""
    files = sorted(manifest["files"])
    if manifest.get("processes", 1) == processes and len(files) == processes > 1:
        return sorted({files[0], files[process]})
    return files


def read_checkpoint(ckpt: Path) -> dict[str, Tensor]:
    """Every tensor of a checkpoint folder, whole (a sharded one's pieces joined), keyed as
    saved; for inspection and export on one machine."""
    ckpt = Path(ckpt)
    manifest = _manifest(ckpt)
    if manifest is None:
        raise ValueError(f"{ckpt} has no readable manifest.json")
    reader = _Reader(ckpt, sorted(manifest["files"]))
    return {k: reader.get(k) for k in reader.keys()}


def load_latest(run_dir: Path, modules, optimizers, process: int = 0, processes: int = 1,
                agree=lambda ok: ok) -> tuple[int, str | None]:
    """Restore the newest valid checkpoint; returns (its step, its folder name), or (0, None).
    Whole or sharded checkpoints alike, onto any number of processes (a sharded parameter
    reads only its own rows). `agree`: every process's verdict on a checkpoint combined
    (all must find it intact), so all resume from the same one."""
    for ckpt in sorted(Path(run_dir).glob(f"{PREFIX}*"), reverse=True):
        manifest = _manifest(ckpt)
        ok = manifest is not None and _verified(ckpt, manifest, _files_to_check(manifest, process, processes))
        if not agree(ok):
            continue
        restore_state(_Reader(ckpt, sorted(manifest["files"])), manifest, modules, optimizers)
        return int(manifest["step"]), ckpt.name
    return 0, None
