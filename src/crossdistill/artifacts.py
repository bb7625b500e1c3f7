"""Models shipped with the project, addressable by name wherever a model path is accepted."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS_DIR = Path(__file__).parent / "toy" / "artifacts"
NAMED = {
    "shapes-teacher": ARTIFACTS_DIR / "shapes-teacher",
    "shapes-student-base": ARTIFACTS_DIR / "shapes-student-base",
    "shapes-classifier": ARTIFACTS_DIR / "shapes-classifier",
}


def resolve(name_or_path: str | Path) -> str:
    """A named model's folder, or the argument unchanged."""
    return str(NAMED.get(str(name_or_path), name_or_path))
