"""Models shipped with the project, addressable by name wherever a model path is accepted:
each domain names its own (e.g. `shapes-teacher`, `pairs-student-base`)."""

from __future__ import annotations

from pathlib import Path


def resolve(name_or_path: str | Path) -> str:
    """A named model's folder, or the argument unchanged."""
    from .domains import find_artifact

    found = find_artifact(str(name_or_path))
    return str(found) if found is not None else str(name_or_path)
