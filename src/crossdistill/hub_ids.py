"""Hugging Face Hub ids, and whether the Hub may be reached (a leaf: imports nothing of the project)."""

from __future__ import annotations

import os
import re
from pathlib import Path

HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def is_hub_id(source: str) -> bool:
    """`owner/name` that is not a local path."""
    return bool(HUB_ID.fullmatch(str(source))) and not Path(source).exists() and not str(source).startswith(".")


def offline() -> bool:
    """HF_HUB_OFFLINE is set: only the local Hugging Face cache may be read."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
