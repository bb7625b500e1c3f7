"""The shapes worlds, crossdistill's synthetic domains as a plug-in distribution.

  shapes/  world I: one coloured shape at one of five places
  pairs/   world II: two coloured shapes and a spatial relation
  pixels   what both judges measure of a rendered image (background gray, palette)
  presets/ the model presets of their Teachers and Student bases

Each world registers itself through the entry-point group `crossdistill.domains`
(this distribution's pyproject.toml) and ships its trained models (`artifacts/`) and its
stage configs (`configs/`). The library imports none of it.
"""

from pathlib import Path

PRESETS = Path(__file__).parent / "presets"
