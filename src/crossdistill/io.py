"""Filesystem helpers: nothing half-written on disk."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import CrossdistillError

RUN_MARKER = ".crossdistill"


def refuse_foreign(path: Path, overwrite: bool, noun: str) -> None:
    """Refuse an existing, non-empty folder without our marker (the user's files) unless `overwrite`."""
    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and not (path / RUN_MARKER).exists() and not overwrite:
        raise CrossdistillError(f"{noun} folder {path} exists and is not a crossdistill {noun}; "
                                f"choose another --out or pass --overwrite")


@contextmanager
def atomic_dir(out: Path, overwrite: bool = False):
    """Build a folder under a temporary name, then rename it into place.

    Refuses to replace an existing folder that is not a crossdistill output unless
    `overwrite`; on any error the temporary folder is removed and `out` is untouched.
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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

