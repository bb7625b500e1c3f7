"""The shapes world: one coloured shape at one of five places (docs/shapes_world.md)."""

from __future__ import annotations

from pathlib import Path

from .. import Domain
from . import scenes


class ShapesDomain(Domain):
    name = "shapes"
    size = scenes.SIZE
    teacher, student, classifier = "shapes-teacher", "shapes-student-base", "shapes-classifier"
    artifacts = Path(__file__).parent / "artifacts"

    def prompts(self) -> list[str]:
        return scenes.all_prompts()

    def vocabulary(self) -> list[str]:
        return scenes.vocabulary()

    def parse(self, prompt: str) -> tuple[str, str, str]:
        return scenes.parse_prompt(prompt)

    def labels(self, prompt: str) -> dict[str, int]:
        c, s, p = scenes.parse_prompt(prompt)
        return {"color": list(scenes.COLORS).index(c), "shape": scenes.SHAPES.index(s),
                "position": list(scenes.POSITIONS).index(p)}

    def label_sizes(self) -> dict[str, int]:
        return {"color": len(scenes.COLORS), "shape": len(scenes.SHAPES), "position": len(scenes.POSITIONS)}

    def random_scene(self, rng, prompt=None):
        return scenes.random_scene(rng, prompt)

    def render_at(self, scene, size: int):
        return scenes.render_at(scene, size)

    def pretrain_config(self):
        from ..pretrain import PretrainConfig
        return PretrainConfig(batch_rng="stream")   # reproduces the committed models

    def adherence(self, images, prompts):
        from .judge import adherence
        return adherence(images, prompts)

    def failures(self, images, prompts):
        from .judge import failures
        return failures(images, prompts)

    def fidelity(self, images):
        from .judge import fidelity
        return fidelity(images)


DOMAIN = ShapesDomain()
