"""Shapes world II ("pairs"): two coloured shapes and a spatial relation (docs/shapes_world.md)."""

from __future__ import annotations

from pathlib import Path

from .. import ModuleDomain
from ..shapes.scenes import COLORS, SHAPES
from . import scenes


class PairsDomain(ModuleDomain):
    name = "pairs"
    size = scenes.SIZE
    teacher, student, classifier = "pairs-teacher", "pairs-student-base", "pairs-classifier"
    artifacts = Path(__file__).parent / "artifacts"
    scenes, judge = scenes, f"{__name__}.judge"

    def labels(self, prompt: str) -> dict[str, int]:
        c1, s1, rel, c2, s2 = scenes.parse_prompt(prompt)
        colors = list(COLORS)
        return {"color1": colors.index(c1), "shape1": SHAPES.index(s1), "relation": scenes.RELATIONS.index(rel),
                "color2": colors.index(c2), "shape2": SHAPES.index(s2)}

    def label_sizes(self) -> dict[str, int]:
        return {"color1": len(COLORS), "shape1": len(SHAPES), "relation": len(scenes.RELATIONS),
                "color2": len(COLORS), "shape2": len(SHAPES)}

    def pretrain_config(self):
        from ..pretrain import PretrainConfig, StageConfig
        # two objects and 1080 prompts: twice the scenes, a deeper Teacher trained twice as long
        return PretrainConfig(scenes=40000, teacher=StageConfig(6000, 64, 5e-4),
                              student_base=StageConfig(3000, 64, 5e-4), classifier=StageConfig(3000, 64, 2e-3))


DOMAIN = PairsDomain()
