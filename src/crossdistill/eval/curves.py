"""Quality versus training step: the saved sample grids of a run (RUN/samples/step-*.png,
their prompts in samples/prompts.json), each scored with its domain's judge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def sample_curve(run_dir: Path) -> list[dict]:
    """[{step, n, all, clean}, ...] for each sample grid of a run: adherence on every attribute
    at once and the clean-image fraction; [] when the run kept no grids or its prompts
    follow no registered domain's grammar (real models: use the grids by eye)."""
    from PIL import Image

    from ..data.images import untile
    from ..errors import CrossdistillError
    from .harness import infer_domain

    folder = Path(run_dir) / "samples"
    if not (folder / "prompts.json").is_file():
        return []
    prompts = json.loads((folder / "prompts.json").read_text())
    try:
        dom = infer_domain(prompts)
    except CrossdistillError:
        return []
    rows = []
    for png in sorted(folder.glob("step-*.png")):
        cells = untile(np.asarray(Image.open(png).convert("RGB")), len(prompts))
        rows.append({"step": int(png.stem.split("-")[1]), "n": len(cells), "all": dom.adherence(cells, prompts)["all"],
                     "clean": dom.fidelity(cells)["clean"]})
    return rows
