"""Filesystem helpers: nothing half-written on disk."""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import CrossdistillError

RUN_MARKER = ".crossdistill"
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}   # what a write hits when the disk (or quota) is full
# the same, as the writers that do not raise OSError word it (safetensors' SafetensorError
# "Error while serializing: IoError(Os { code: 28, kind: StorageFull, .. })", torch's RuntimeError)
_DISK_FULL_TEXT = ("No space left on device", "StorageFull", "Disk quota exceeded", "QuotaExceeded", "File too large")


def is_disk_full(e: BaseException) -> bool:
    """Whether a failed write failed because the disk (or the user's quota) is full."""
    if isinstance(e, OSError) and e.errno is not None:
        return e.errno in DISK_FULL
    return any(t in str(e) for t in _DISK_FULL_TEXT)


def disk_error(e: BaseException, what: str, folder: Path, needed: int | None = None,
               kept: str = "nothing was replaced") -> CrossdistillError:
    """One line for a write that failed: what, where, why, the space it needed and the
    space free there (when it can be read), and what was kept."""
    folder = Path(folder)
    try:
        free = f"{_mb(shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists())).free)} free there"
    except (OSError, StopIteration):
        free = "free space unknown"
    need = f"it needed about {_mb(needed)}, {free}" if needed else free
    why = getattr(e, "strerror", None) or "No space left on device"
    return CrossdistillError(f"could not write {what} in {folder}: {why}; {need}; {kept}")


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def refuse_foreign(path: Path, overwrite: bool, noun: str) -> None:
    """Refuse an existing, non-empty folder without our marker (the user's files) unless `overwrite`."""
    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and not (path / RUN_MARKER).exists() and not overwrite:
        raise CrossdistillError(f"{noun} folder {path} exists and is not a crossdistill {noun}; "
                                f"choose another --out or pass --overwrite")


@contextmanager
def atomic_dir(out: Path, overwrite: bool = False, needed: int | None = None):
    """Build a folder under a temporary name, then rename it into place.

    Refuses to replace an existing folder that is not a crossdistill output unless
    `overwrite`; on any error the temporary folder is removed and `out` is untouched. A full
    disk is one line saying how much was needed (`needed` bytes, if the caller knows; else
    what had been written when it failed) and how much is free.
    """
    out = Path(out)
    refuse_foreign(out, overwrite, "output")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        (tmp / RUN_MARKER).write_text("crossdistill output\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException as e:
        full = isinstance(e, Exception) and is_disk_full(e)
        written = folder_bytes(tmp) if full and not needed else 0   # before it goes
        shutil.rmtree(tmp, ignore_errors=True)
        if not full:
            raise
        raise disk_error(e, out.name, out.parent, needed or None,
                         f"{out.name} is as it was" + ("" if needed else f" ({_mb(written)} written when it failed)")) \
            from None


@contextmanager
def atomic_file(out: Path):
    """Yield a temporary path beside `out`; on success it is renamed to `out`, on error removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        yield tmp
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_images(out: Path, items, fields: dict | None = None, overwrite: bool = False, digits: int = 5) -> Path:
    """PNGs plus manifest.jsonl ({file, **record, **fields}) from (uint8 image, record)
    items, written atomically: the folder appears complete or not at all. Generations and
    exported renders share it."""
    import json

    from PIL import Image

    with atomic_dir(out, overwrite) as tmp, open(tmp / "manifest.jsonl", "w") as f:
        for k, (img, record) in enumerate(items):
            name = f"{k:0{digits}d}.png"
            Image.fromarray(img).save(tmp / name)
            f.write(json.dumps({"file": name, **record, **(fields or {})}) + "\n")
    return Path(out)

