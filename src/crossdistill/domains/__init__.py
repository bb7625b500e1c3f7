"""Domains: the worlds a Teacher and Student are trained and judged in, as plug-ins.

A `Domain` bundles what method code must never know about a world: its prompt grammar
(and the clear error for a prompt outside it), its scenes and reference renders, its
judges (prompt adherence, image fidelity), the labels its feature network reads, and the
models it ships by name. Method code (`bridge`, `distill`, `train`, `generate`, `eval`)
asks the registry for the domain a model names in its `crossdistill.json`
(`defaults.domain`) and calls these methods; it imports no domain.

Domains come from installed packages, through the entry-point group
`crossdistill.domains` (name -> a `Domain` instance), or from `register` at run time.
The shapes worlds (`shapes`: one object; `pairs`: two objects and a relation;
docs/shapes_world.md) are such a package, `crossdistill-worlds` (`worlds/` in the
repository), which `make demo` and `make test` install beside the library.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import choice_error

if TYPE_CHECKING:
    import numpy as np

_LOADED: dict[str, "Domain"] = {}


def scene_rng(seed: int, index: int) -> "np.random.Generator":
    """The generator of scene `index` of a dataset seeded `seed` (independent of order)."""
    import numpy as np

    return np.random.default_rng([seed, index])


class Domain:
    """The contract of a domain. Subclasses set the class attributes and implement the
    methods that raise NotImplementedError; the rest have working defaults."""

    name: str = ""
    size: int = 64                       # render size (Teacher resolution); Students use size // 2
    teacher: str = ""                    # named artifacts this domain ships
    student: str = ""
    classifier: str | None = None        # feature network of the domain FID (None: no FID)
    bridge: str | None = None            # a trained Teacher -> Student Bridge shipped with it (stage 2's default)
    extra_teachers: tuple[str, ...] = ()  # further Teachers it ships (several-Teacher distillation), each with its
                                         # own VAE: pretrained by the stages "vae-<name>" and "<name>"
    extra_bridges: tuple[str, ...] = ()  # shipped Bridges from the Student into each extra Teacher's space
    artifacts: Path | None = None        # folder holding the named artifacts
    example_prompt: str = ""             # a prompt of its grammar shown to users (model cards, report, app)
    configs: Path | None = None          # folder of the stage configs it ships (`crossdistill config list`)
    presets: Path | None = None          # folder of its models' presets (NAME.json), read by `preset(name)`
    demo_configs: dict = {}              # the shipped configs `crossdistill demo` starts from: bridge (stage 1),
                                         # cross and shared (stage 2, cross- and shared-space)
    pretrain_recipe: dict = {}           # its models' pretraining recipe: overrides of `pretrain.PretrainConfig`

    # -- prompts ---------------------------------------------------------------
    def prompts(self) -> list[str]:
        """Every prompt of the grammar, in a fixed order (training uses all of them)."""
        raise NotImplementedError

    def eval_prompts(self) -> list[str]:
        """The prompts evaluations report on."""
        return self.prompts()

    def vocabulary(self) -> list[str]:
        raise NotImplementedError

    def parse(self, prompt: str) -> tuple:
        """The prompt's attributes; a CrossdistillError naming the bad word when the
        prompt is outside the grammar."""
        raise NotImplementedError

    def check_prompts(self, prompts: list[str]) -> None:
        for p in prompts:
            self.parse(p)

    def labels(self, prompt: str) -> dict[str, int]:
        """Class index per attribute (the feature network's heads)."""
        raise NotImplementedError

    def object_words(self, prompt: str) -> list[list[int]] | None:
        """For each object the prompt names, the indices of its whitespace words (e.g.
        colour and shape); per-object attention maps are read on their tokens. None: the
        domain declares no objects."""
        return None

    def label_sizes(self) -> dict[str, int]:
        raise NotImplementedError

    def swapped_caption(self, prompt: str) -> str | None:
        """The prompt with its attributes bound to the wrong objects (e.g. the two colours
        exchanged), a caption in the grammar that names the same words; None: the domain's
        prompts bind nothing to swap. Pretraining's `student_caption_swap` uses it."""
        return None

    # -- scenes ------------------------------------------------------------------
    def random_scene(self, rng: "np.random.Generator", prompt: str | None = None) -> Any:
        """A scene (with a `.prompt`) drawn from the domain's distribution."""
        raise NotImplementedError

    def render_at(self, scene: Any, size: int) -> "np.ndarray":
        """uint8 (size, size, 3) image of a scene."""
        raise NotImplementedError

    def scene_record(self, scene: Any) -> dict:
        """JSON-able parameters of a scene (written beside exported renders)."""
        from dataclasses import asdict, is_dataclass
        return asdict(scene) if is_dataclass(scene) else {}

    # -- judges ------------------------------------------------------------------
    def adherence(self, images, prompts) -> dict[str, float]:
        """Mean accuracy per attribute and `all` over image / prompt pairs."""
        raise NotImplementedError

    def failures(self, images, prompts) -> dict[str, dict[str, int]]:
        """Per attribute, how many images got it wrong, by the value the prompt asked for."""
        return {}

    def fidelity(self, images) -> dict[str, float]:
        """`clean`: the fraction of images whose background looks like a render's."""
        raise NotImplementedError

    def variety(self, images, prompts, per_prompt: bool = False) -> dict:
        """For each factor a prompt leaves open (a size, a position, the background), its
        spread over each prompt's images, averaged over the prompts ({}: none known); with
        `per_prompt`, the list of each prompt's spread. A generator whose seed does nothing
        scores 0 on each."""
        return {}

    def reference_renders(self, prompts: list[str], seed: int) -> list:
        """One render per prompt occurrence at the domain's size (the FID's real side):
        scene i drawn for prompt i (`scene_rng(seed, i)`)."""
        return [self.render_at(self.random_scene(scene_rng(seed, i), p), self.size) for i, p in enumerate(prompts)]

    # -- models --------------------------------------------------------------------
    def feature_network(self, path):
        """The domain FID's feature network (a module with `.features(x)`), from its folder."""
        from .classifier import DomainClassifier
        return DomainClassifier.load(path, heads=self.label_sizes())

    def artifact(self, name: str) -> Path | None:
        """The folder of a named artifact this domain ships, or None."""
        if self.artifacts is None or name not in {self.teacher, self.student, self.classifier, self.bridge,
                                                  *self.extra_teachers, *self.extra_bridges}:
            return None
        return self.artifacts / name

    def preset(self, name: str) -> dict:
        """The model preset `name` (a domain's Teacher / Student): its own folder's, or the
        library's."""
        import json

        own = self.presets / f"{name}.json" if self.presets is not None else None
        if own is not None and own.is_file():
            return json.loads(own.read_text())
        from ..presets import load_preset
        return load_preset(name)

    def __repr__(self) -> str:
        return f"<domain {self.name}>"


class ModuleDomain(Domain):
    """A domain whose scenes live in a module (`all_prompts`, `vocabulary`, `parse_prompt`,
    `random_scene`, `render_at`, optionally `eval_prompts`) and whose judge is a module
    imported on first use (`adherence`, `failures`, `fidelity`): the built-in domains."""

    scenes: Any = None    # the scenes module
    judge: str = ""       # the judge module's dotted path (imported when judging: scipy)

    def prompts(self) -> list[str]:
        return self.scenes.all_prompts()

    def eval_prompts(self) -> list[str]:
        own = getattr(self.scenes, "eval_prompts", None)
        return own() if own is not None else self.prompts()

    def vocabulary(self) -> list[str]:
        return self.scenes.vocabulary()

    def parse(self, prompt: str) -> tuple:
        return self.scenes.parse_prompt(prompt)

    def random_scene(self, rng, prompt=None):
        return self.scenes.random_scene(rng, prompt)

    def object_words(self, prompt: str):
        own = getattr(self.scenes, "object_words", None)
        return own(prompt) if own is not None else None

    def render_at(self, scene, size: int):
        return self.scenes.render_at(scene, size)

    def adherence(self, images, prompts):
        return importlib.import_module(self.judge).adherence(images, prompts)

    def failures(self, images, prompts):
        return importlib.import_module(self.judge).failures(images, prompts)

    def fidelity(self, images):
        return importlib.import_module(self.judge).fidelity(images)

    def variety(self, images, prompts, per_prompt=False):
        judge = importlib.import_module(self.judge)
        return judge.variety(images, prompts, per_prompt) if hasattr(judge, "variety") else {}


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="crossdistill.domains")}


def names() -> list[str]:
    """Installed (entry points) and run-time registered domains."""
    return sorted(set(_entry_points()) | set(_LOADED))


def get(name: str) -> Domain:
    """The domain called `name`: registered at run time, or from an installed plug-in."""
    if name in _LOADED:
        return _LOADED[name]
    eps = _entry_points()
    if name not in eps:
        raise choice_error("domain", name, names())
    dom = eps[name].load()
    _LOADED[name] = dom
    return dom


def register(domain: Domain) -> Domain:
    """Register a domain object at run time (tests, notebooks)."""
    _LOADED[domain.name] = domain
    return domain


REAL_WORLD_EXAMPLE = "a photo of a corgi on a beach"


def example_prompt(domain: str | None) -> str:
    """A prompt to show users of a model of `domain` (None: a real-world model)."""
    if domain is None:
        return REAL_WORLD_EXAMPLE
    return get(domain).example_prompt or get(domain).eval_prompts()[0]


def find_artifact(name: str) -> Path | None:
    """The folder of a model any domain ships under `name`, or None. A plug-in that fails
    to load is reported and skipped (it must not stop other models from loading)."""
    import warnings

    for d in names():
        try:
            path = get(d).artifact(name)
        except Exception as e:   # a broken third-party plug-in
            warnings.warn(f"domain plug-in {d!r} failed to load ({type(e).__name__}: {e}); skipped")
            continue
        if path is not None:
            return path
    return None
