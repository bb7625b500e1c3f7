"""The shapes world: one coloured shape at one of five places (docs/shapes_world.md)."""

from __future__ import annotations

from pathlib import Path

from crossdistill.domains import ModuleDomain

from .. import PRESETS
from . import scenes


class ShapesDomain(ModuleDomain):
    name = "shapes"
    example_prompt = "a red circle at the top"
    size = scenes.SIZE
    teacher, student, classifier = "shapes-teacher", "shapes-student-base", "shapes-classifier"
    extra_teachers = ("shapes-teacher-flux",)   # a second Teacher of another family (several-Teacher stage 2)
    extra_bridges = ("shapes-bridge-flux",)     # its Bridge (as shapes-bridge, into the Flux Teacher's space)
    bridge = "shapes-bridge"   # the demo's stage-1 Bridge (300 steps, 2000 images): configs/distill_shapes*.yaml
    artifacts = Path(__file__).parent / "artifacts"
    configs = Path(__file__).parent / "configs"
    presets = PRESETS / "shapes"
    demo_configs = {"bridge": "bridge_shapes", "cross": "distill_shapes", "shared": "distill_shapes_shared"}
    scenes, judge = scenes, f"{__name__}.judge"

    def labels(self, prompt: str) -> dict[str, int]:
        c, s, p = scenes.parse_prompt(prompt)
        return {"color": list(scenes.COLORS).index(c), "shape": scenes.SHAPES.index(s),
                "position": list(scenes.POSITIONS).index(p)}

    def label_sizes(self) -> dict[str, int]:
        return {"color": len(scenes.COLORS), "shape": len(scenes.SHAPES), "position": len(scenes.POSITIONS)}

    pretrain_recipe = {"batch_rng": "stream"}   # reproduces the committed models


DOMAIN = ShapesDomain()
