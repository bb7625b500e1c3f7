"""Parallelism, applied in one place, outside model code (torchtitan's rule).

`ddp` (default): every process holds every model; the trainable ones' gradients are
averaged after backward (`average_gradients`, DDP's arithmetic).

`fsdp`: the Teacher side, the models that make the memory bill (the frozen Teacher, 8B
for SD 3.5 large, 12B for Flux, and the fake score, a full trainable copy of it or a
LoRA on it), is sharded with FSDP2 `fully_shard`: every block of every top-level
`ModuleList` is one unit, the model itself the root, so a process holds 1/N of the
weights (and of the fake score's optimizer state) and gathers one block at a time. The
Student side (the one-step generator, an SD 1.5-class 0.9B UNet, its EMA, the Bridge)
stays replicated with averaged gradients: exports and sample grids need it whole on one
process anyway. FSDP averages its own gradients (reduce-scatter), so
`average_gradients` leaves sharded parameters alone. Which models are the Teacher side
is the task's `shard_targets()`; nothing else here knows a model family.

Chosen by `train.parallel=fsdp`, or by an Accelerate config with
`distributed_type: FSDP` (its `fsdp_reshard_after_forward` is honoured); one process
ignores it.
"""

from __future__ import annotations

import torch


PARALLEL = ("ddp", "fsdp")


def uses_fsdp(acc, parallel: str) -> bool:
    from accelerate.utils import DistributedType

    return acc.num_processes > 1 and (parallel == "fsdp" or acc.distributed_type == DistributedType.FSDP)


def _reshard_after_forward(acc) -> bool:
    plugin = getattr(acc.state, "fsdp_plugin", None)
    value = getattr(plugin, "reshard_after_forward", True)
    return value if isinstance(value, bool) else True   # FSDP1-style strategy names: the FSDP2 default


def shard(acc, models) -> int:
    """`fully_shard` each model (its top-level ModuleLists' blocks, then the root) over all
    processes. Returns the number of FSDP units. Parameters are replaced by DTensors, so
    optimizers must be built afterwards (the loop calls `task.setup` after this)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(acc.device.type, (acc.num_processes,))
    reshard = _reshard_after_forward(acc)
    units, seen = 0, set()
    for model in models:
        if id(model) in seen:
            continue
        seen.add(id(model))
        for child in model.children():
            if isinstance(child, torch.nn.ModuleList):
                for block in child:
                    fully_shard(block, mesh=mesh, reshard_after_forward=reshard)
                    units += 1
        fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
        units += 1
    return units


def is_sharded(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if is_sharded(t) else t


def every_process(flag: bool, device) -> bool:
    """`flag` AND-ed over all processes (unchanged without a multi-process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def any_process(flag: bool, params) -> bool:
    """`flag` OR-ed over processes when some of `params` are sharded (each process then
    sees only its shard of a gradient); unchanged otherwise (gradients already averaged)."""
    if not any(is_sharded(p) for p in params):
        return flag
    return not every_process(not flag, next(iter(params)).device)
