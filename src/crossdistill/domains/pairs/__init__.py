"""Shapes world II ("pairs"): two coloured shapes and a spatial relation (docs/shapes_world.md)."""

from __future__ import annotations

from pathlib import Path

from .. import Domain
from ..shapes.scenes import COLORS, SHAPES
from . import scenes


class PairsDomain(Domain):
    name = "pairs"
    size = scenes.SIZE
    teacher, student, classifier = "pairs-teacher", "pairs-student-base", "pairs-classifier"
    artifacts = Path(__file__).parent / "artifacts"

    def prompts(self) -> list[str]:
        return scenes.all_prompts()

    def eval_prompts(self) -> list[str]:
        return scenes.eval_prompts()

    def vocabulary(self) -> list[str]:
        return scenes.vocabulary()

    def parse(self, prompt: str) -> tuple[str, str, str, str, str]:
        return scenes.parse_prompt(prompt)

    def labels(self, prompt: str) -> dict[str, int]:
        c1, s1, rel, c2, s2 = scenes.parse_prompt(prompt)
        colors = list(COLORS)
        return {"color1": colors.index(c1), "shape1": SHAPES.index(s1), "relation": scenes.RELATIONS.index(rel),
                "color2": colors.index(c2), "shape2": SHAPES.index(s2)}

    def label_sizes(self) -> dict[str, int]:
        return {"color1": len(COLORS), "shape1": len(SHAPES), "relation": len(scenes.RELATIONS),
                "color2": len(COLORS), "shape2": len(SHAPES)}

    def random_scene(self, rng, prompt=None):
        return scenes.random_scene(rng, prompt)

    def render_at(self, scene, size: int):
        return scenes.render_at(scene, size)

    def adherence(self, images, prompts):
        from .judge import adherence
        return adherence(images, prompts)

    def failures(self, images, prompts):
        from .judge import failures
        return failures(images, prompts)

    def fidelity(self, images):
        from .judge import fidelity
        return fidelity(images)

    def pretrain_config(self):
        from ..pretrain import PretrainConfig, StageConfig
        # two objects and 1080 prompts: twice the scenes, a deeper Teacher trained twice as long
        return PretrainConfig(scenes=40000, teacher=StageConfig(6000, 64, 5e-4),
                              student_base=StageConfig(1500, 64, 5e-4), classifier=StageConfig(3000, 64, 2e-3))


DOMAIN = PairsDomain()
