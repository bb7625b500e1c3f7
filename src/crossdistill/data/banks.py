"""Paired latents for stage 1: each image encoded by both VAEs, each at its model's resolution.

Two banks behind one interface (`len`, `latent_shape`, `take(idx)`, `prompts`):
`MemoryBank` holds its latents in memory (evaluation sets, tests); `ShardBank` reads them
from safetensors shards on disk, row by row, so a training process holds one batch of
latents whatever the bank's size. `build_bank` writes a `ShardBank`: each process
encodes its own disjoint share of the shards (shard k goes to process k mod N), every
shard is written atomically, and a rerun keeps the shards already written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CrossdistillError


class Bank:
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def latent_shape(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(Student latent shape, Teacher latent shape) of one pair."""
        raise NotImplementedError

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Rows `idx`: (Student latents, Teacher latents, prompts)."""
        raise NotImplementedError


@dataclass
class MemoryBank(Bank):
    """(Student latent, Teacher latent, prompt) triples in memory; `images`: the
    Teacher-resolution images in [-1, 1], kept for evaluation."""
    z_s: torch.Tensor
    z_t: torch.Tensor
    prompts: list[str]
    images: torch.Tensor | None = None

    @property
    def latent_shape(self):
        return tuple(self.z_s.shape[1:]), tuple(self.z_t.shape[1:])

    def take(self, idx):
        return self.z_s[idx], self.z_t[idx], [self.prompts[i] for i in idx.tolist()]


@torch.no_grad()
def encode_latents(images: torch.Tensor, prompts: list[str], student, teacher, s_res: int, t_res: int,
                   keep_images: bool = False, batch: int = 200) -> MemoryBank:
    """z_t* = E_t(x) at the Teacher's resolution, z_s = E_s(resize(x)) at the Student's."""
    zs, zt = [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        x_t = x if x.shape[-1] == t_res else F.interpolate(x, size=t_res, mode="bilinear", antialias=True)
        x_s = F.interpolate(x, size=s_res, mode="area") if x.shape[-1] != s_res else x
        zt.append(teacher.space.encode(x_t.to(teacher.device, teacher.dtype)).float().cpu())
        zs.append(student.space.encode(x_s.to(student.device, student.dtype)).float().cpu())
    return MemoryBank(torch.cat(zs), torch.cat(zt), list(prompts), images if keep_images else None)


SPEC = "spec.json"


def _shard(folder: Path, k: int) -> Path:
    return folder / f"shard-{k:06d}.safetensors"


class ShardBank(Bank):
    """A bank on disk: `shard-000000.safetensors`, ... (tensors `z_s`, `z_t`; the prompts
    and the process that wrote the shard in the header's metadata) and `spec.json`. Rows are read on demand (memory-mapped)."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        self.folder = Path(folder)
        spec = json.loads((self.folder / SPEC).read_text())
        self.size, n = spec["shard_size"], spec["images"]
        self.shards = -(-n // self.size)
        missing = [k for k in range(self.shards) if not _shard(self.folder, k).is_file()]
        if missing:
            raise CrossdistillError(f"bank {self.folder} is incomplete: {len(missing)} of {self.shards} shards "
                                    f"missing (first: {_shard(self.folder, missing[0]).name}); rerun to finish it")
        self.prompts = []
        for k in range(self.shards):
            with safe_open(str(_shard(self.folder, k)), framework="pt") as f:
                self.prompts += json.loads(f.metadata()["prompts"])
                if k == 0:
                    self._shapes = (tuple(f.get_slice("z_s").get_shape()[1:]), tuple(f.get_slice("z_t").get_shape()[1:]))

    @property
    def latent_shape(self):
        return self._shapes

    def take(self, idx):
        from safetensors import safe_open

        idx = idx.tolist()
        z_s, z_t = [None] * len(idx), [None] * len(idx)
        by_shard: dict[int, list[int]] = {}
        for j, i in enumerate(idx):
            by_shard.setdefault(i // self.size, []).append(j)
        for k, js in by_shard.items():
            with safe_open(str(_shard(self.folder, k)), framework="pt") as f:
                s, t = f.get_slice("z_s"), f.get_slice("z_t")
                for j in js:
                    r = idx[j] - k * self.size
                    z_s[j], z_t[j] = s[r:r + 1], t[r:r + 1]
        return torch.cat(z_s), torch.cat(z_t), [self.prompts[i] for i in idx]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def build_bank(folder: Path, source, spec: dict, student, teacher, s_res: int, t_res: int, shard_size: int,
               process: int = 0, processes: int = 1, progress: bool = True) -> list[int]:
    """Encode `source` (an `ImageSource`) into shards under `folder`: this process writes
    shards process, process + processes, ... that are not on disk yet. `spec` describes
    the data and models; a folder built from another spec is refused. Returns the shards
    written. Call `ShardBank(folder)` once every process is done."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    folder = Path(folder)
    spec = {"images": len(source), "shard_size": shard_size, **spec}
    path = folder / SPEC
    if path.is_file():
        old, new = _flat(json.loads(path.read_text())), _flat(json.loads(json.dumps(spec)))
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise CrossdistillError(f"bank {folder} was built from other data or models ({', '.join(diff)} differ); "
                                    f"delete it or train into another folder")
    folder.mkdir(parents=True, exist_ok=True)
    if not path.is_file() and process == 0:
        tmp = folder / f".{SPEC}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(spec, indent=1))
        tmp.rename(path)
    n = len(source)
    mine = [k for k in range(process, -(-n // shard_size), processes) if not _shard(folder, k).is_file()]
    for k in tqdm(mine, desc="encoding the stage-1 bank", unit="shard", disable=not progress or not mine):
        lo, hi = k * shard_size, min(n, (k + 1) * shard_size)
        images, prompts = source.read(lo, hi)
        latents = encode_latents(images, prompts, student, teacher, s_res, t_res)
        final = _shard(folder, k)
        tmp = folder / f".{final.name}.tmp-{os.getpid()}"
        save_file({"z_s": latents.z_s.contiguous(), "z_t": latents.z_t.contiguous()}, str(tmp),
                  metadata={"prompts": json.dumps(prompts), "process": str(process)})
        tmp.rename(final)
    return mine
