"""Where inference runs: device, dtype and CPU threads, chosen once per command.

`generate`, `eval --model` and `bench` take `--device` (auto: cuda, then mps, then cpu;
or an explicit `cpu`, `cuda`, `cuda:1`, `mps`) and `--dtype` (auto: fp16 on a GPU, fp32
on the CPU; or fp32 / fp16 / bf16). A device that is not there is one clear line.
"""

from __future__ import annotations

import re

import torch

from .errors import CrossdistillError, choice_error

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def pick_device(spec: str | None = "auto") -> torch.device:
    """`auto` (or None): cuda if present, then mps, then cpu; otherwise the named device,
    refused in one line when this machine has none."""
    spec = (spec or "auto").strip().lower()
    if not _DEVICE.fullmatch(spec):
        raise CrossdistillError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {spec!r}")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CrossdistillError(f"--device {spec}: no CUDA device on this machine (torch {torch.__version__}, "
                                    f"CUDA build: {torch.version.cuda or 'no'}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CrossdistillError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                    f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not has_mps:
        raise CrossdistillError(f"--device {spec}: MPS is not available on this machine; use --device cpu or auto")
    return dev


def pick_dtype(spec: str | None, device: torch.device) -> torch.dtype:
    """`auto` (or None): fp16 on a GPU, fp32 on the CPU (CPU half precision is slow and lossy)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    if spec not in DTYPES:
        raise choice_error("--dtype", spec, ["auto", *DTYPES])
    return DTYPES[spec]


def set_threads(n: int) -> None:
    """CPU threads for torch; 0 leaves torch's own choice (its default: the machine's cores)."""
    if n < 0:
        raise CrossdistillError(f"--threads must be >= 0 (0: torch's default), got {n}")
    if n:
        torch.set_num_threads(n)

