"""`crossdistill demo`: the method end to end on a domain (default: the shapes world),
measured, in one folder.

From the domain's committed Teacher and Student base: real renders (reference row), the
Teacher and the Student base (multi-step), the stage-1 Bridge (and its held-out
evaluation against the round-trip), the shared-space one-step baseline and the
cross-space one-step Student (stage 2, same loop, same budget), each exported as a
diffusers pipeline, generated with the same prompts and seeds and scored; latency of
every model; `report.html` and `metrics.json`. `--full` adds the two main settings
without the manifold term, the ablations (round-trip, projector-only and
no-attention-fidelity Bridges, each distilled alike), the 2- and 4-step and the LoRA
cross-space Students, on a domain shipping further Teachers (the shapes world: a Flux-family
one) their Bridges, their rows, and the Students from each alone and from all at once, and
8 images per prompt; `--train-seeds 3` trains the two main Students (shared-space, cross-space)
with stage-2 seeds 0, 1, 2 (the generator's noise and prompt order change; Teacher,
Student base and Bridge stay) and reports means with 95 % intervals; with `--full` the
ablation Students get the same seeds, and `--bridge-seeds` retrains every Bridge per seed
too (stage-1 seed = training seed; the Bridge's held-out scores get intervals and each
seed's Students distil through that seed's Bridges). Every stage writes its own folder atomically;
rerunning the same command skips what is finished.

    DIR/metrics.json  DIR/report.html  DIR/grid.png  DIR/demo.log  DIR/config.json
    DIR/students/<method>[-seedN]/   exported Students (StableDiffusionPipeline folders; a LoRA folder)
    DIR/bridge[-seedN]/bridge/       the stage-1 Bridge (DIR/bridge: its run, logs, history)
    DIR/runs/<method>[-seedN]/       stage-2 runs (checkpoints, history.jsonl, tensorboard logs)
    DIR/ablations/<variant>[-seedN]/ --full: the other stage-1 Bridges
    DIR/generations/<method>[-seedN]/  PNGs + manifest.jsonl + metrics.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CrossdistillError
from .report import BASE, CROSS, REAL, SHARED, TEACHER


@dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    domain: str = "shapes"         # a registered domain (`crossdistill.domains`): its models, prompts and judge
    full: bool = False             # + ablations, 8 images per prompt
    n_per_prompt: int | None = None   # images per prompt per model (default 4; --full 8)
    seed: int = 100_000            # generation seeds: seed + k
    bridge_steps: int = 300
    bridge_images: int = 2000
    distill_steps: int = 300
    train_seeds: int = 1           # stage-2 training seeds per Student (0 .. n-1); n > 1: means and 95 % intervals
    bridge_seeds: bool = False     # also train each Bridge with stage-1 seeds 0 .. n-1 (Students of seed s use them)
    prompts: int | None = None     # first N of the domain's evaluation prompts (None: all; tests use fewer)
    bench_repeats: int = 3
    threads: int = 0                 # torch CPU threads (0: torch's default)

    @staticmethod
    def default_out(domain: str) -> Path:
        """Where a domain's demo goes unless told: runs/demo for the shapes world, runs/demo-<domain> else."""
        return Path("runs/demo" if domain == "shapes" else f"runs/demo-{domain}")

    def resolved(self) -> "DemoConfig":
        n = self.n_per_prompt or (8 if self.full else 4)
        return dataclasses.replace(self, n_per_prompt=n)


@dataclass
class Method:
    label: str          # row name
    slug: str           # folder name
    recipe: str         # the domain's stage-2 config it starts from (`Domain.demo_configs`): cross | shared
    teacher: str        # "teacher" or "student" of the domain (the Student base is the shared-space Teacher),
                        # or one of the domain's extra Teachers by name
    bridge: str         # "identity", "roundtrip", or a stage-1 variant name (DIR/bridge, DIR/ablations/<v>)
    settings: dict = field(default_factory=dict)   # overrides of the recipe (dotted keys)
    also: tuple = ()    # several Teachers: further (teacher, bridge variant) pairs, all weighted alike


# The two methods read their settings from the domain's shipped configs (`crossdistill config
# list`), the best of one search for each (docs/distill.md, "A fair baseline"); the rows of
# --full change one thing each.
SHARED_METHOD = {"recipe": "shared", "teacher": "student"}
CROSS_METHOD = {"recipe": "cross", "teacher": "teacher"}
NO_MANIFOLD = {"manifold.weight": 0.0}
BRIDGES = {"bridge": {}, "bridge-no-attn": {"attn.weight": 0.0}, "projector-only": {"bridge.kind": "projector_only"}}
MAIN = [Method(SHARED, "shared-space", bridge="identity", **SHARED_METHOD),
        Method(CROSS, "cross-space", bridge="bridge", **CROSS_METHOD)]
TRADE_OFF = [Method(f"{SHARED}, no manifold term", "shared-space-no-manifold", bridge="identity",
                    settings=NO_MANIFOLD, **SHARED_METHOD),
             Method(f"{CROSS}, no manifold term", "cross-space-no-manifold", bridge="bridge",
                    settings=NO_MANIFOLD, **CROSS_METHOD)]
ABLATIONS = [Method("cross-space, round-trip Bridge", "cross-roundtrip", bridge="roundtrip", **CROSS_METHOD),
             Method("cross-space, projector-only Bridge", "cross-projector-only", bridge="projector-only",
                    **CROSS_METHOD),
             Method("cross-space, Bridge without attention fidelity", "cross-no-attn", bridge="bridge-no-attn",
                    **CROSS_METHOD)]

# beyond the paper (--full): few-step and LoRA cross-space Students, same budget and settings
FEW_STEP = {"generator.final_alpha_bar": None}   # the gentle x0 map is one-step only
EXTENSIONS = [Method("cross-space 2-step", "cross-2step", bridge="bridge",
                     settings={**FEW_STEP, "generator.steps": 2}, **CROSS_METHOD),
              Method("cross-space 4-step", "cross-4step", bridge="bridge",
                     settings={**FEW_STEP, "generator.steps": 4}, **CROSS_METHOD),
              Method("cross-space LoRA Student (rank 16)", "cross-lora", bridge="bridge",
                     settings={"generator.kind": "lora", "generator.rank": 16}, **CROSS_METHOD)]


def extra_bridge(teacher: str) -> str:
    """The stage-1 variant holding the Bridge into an extra Teacher's space."""
    return f"bridge-{teacher}"


def several_teachers(domain) -> list[Method]:
    """--full on a domain shipping further Teachers: the cross-space Student from each extra
    Teacher alone and from all Teachers at once, at the cross-space setting."""
    extra = list(domain.extra_teachers)
    if not extra:
        return []
    alone = [Method(f"cross-space, {t} alone", f"cross-{t}", recipe="cross", teacher=t, bridge=extra_bridge(t))
             for t in extra]
    return alone + [Method(f"cross-space, {len(extra) + 1} Teachers at once", f"cross-{len(extra) + 1}-teachers",
                           bridge="bridge", also=tuple((t, extra_bridge(t)) for t in extra), **CROSS_METHOD)]


SAME_ON_RESUME = ("n_per_prompt", "seed", "bridge_steps", "bridge_images", "distill_steps", "prompts")


class _Log:
    """Stage banners on the console and, timestamped, in DIR/demo.log."""

    def __init__(self, path: Path, t0: float):
        self.path, self.t0 = path, t0

    def stage(self, name: str) -> None:
        print(f"\n== {name} ==  ({time.time() - self.t0:.0f} s)", flush=True)
        self(f"stage: {name}")

    def __call__(self, msg: str) -> None:
        with open(self.path, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} +{time.time() - self.t0:7.1f}s  {msg}\n")


def _bridge_dir(out: Path, variant: str, seed: int = 0) -> Path:
    return out / _seeded("bridge", seed) if variant == "bridge" else out / "ablations" / _seeded(variant, seed)


def _bridge_key(bridge_dir: str | None) -> str | None:
    """Which Bridge a stage-2 run used, independent of how the demo folder was spelled:
    identity / roundtrip, or the (seeded) variant folder holding it."""
    return bridge_dir if bridge_dir in (None, "identity", "roundtrip") else Path(bridge_dir).parent.name


def _seeded(slug: str, seed: int) -> str:
    return slug if seed == 0 else f"{slug}-seed{seed}"


class Demo:
    """The demo's folder, log and stage timings; one method per stage."""

    def __init__(self, cfg: DemoConfig):
        from .config import to_dict
        from .domains import get
        from .io import RUN_MARKER

        self.cfg = cfg = cfg.resolved()
        self.out = out = Path(cfg.out)
        if out.exists() and any(out.iterdir()) and not (out / RUN_MARKER).exists():
            raise CrossdistillError(f"{out} exists and is not a crossdistill demo folder; choose another --out")
        if (out / "config.json").exists():   # resuming: the same domain only
            stored = json.loads((out / "config.json").read_text())
            before = stored.get("domain", "shapes")
            if before != cfg.domain:
                raise CrossdistillError(f"{out} holds a demo of domain {before!r}, not {cfg.domain!r}; "
                                        f"choose another --out")
            # what finished rows were made with must not change under them (--full alone changes the
            # default images per prompt: pass --n-per-prompt); --full, --train-seeds and --threads only
            # add rows (or speed); a Student trained through another seed's Bridge is refused in student()
            for key in SAME_ON_RESUME:
                if key in stored and stored[key] != to_dict(cfg)[key]:
                    raise CrossdistillError(f"{out} was made with {key.replace('_', '-')}={stored[key]}, not "
                                            f"{to_dict(cfg)[key]}; rerun with the same value or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_MARKER).write_text("crossdistill demo\n")
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1, default=str))
        self.domain = dom = get(cfg.domain)
        self.prompts = dom.eval_prompts()[:cfg.prompts]
        # stage 2 trains on every prompt of the domain (a test's shortened demo: its own prompts)
        self.train_prompts = dom.prompts() if cfg.prompts is None else self.prompts
        self.t0 = time.time()
        self.log = _Log(out / "demo.log", self.t0)
        self.log(f"demo start: {json.dumps(to_dict(cfg), default=str)}")
        self.timings_path = out / "stage_times.json"
        self.timings = json.loads(self.timings_path.read_text()) if self.timings_path.exists() else {}
        self.resumed = bool(self.timings)
        self.methods = MAIN + (TRADE_OFF + ABLATIONS + EXTENSIONS + several_teachers(dom) if cfg.full else [])
        self.variants = ["bridge"] + ([m.bridge for m in ABLATIONS if m.bridge in BRIDGES]
                                      + [extra_bridge(t) for t in dom.extra_teachers] if cfg.full else [])
        self.bridge_seeds = list(range(cfg.train_seeds)) if cfg.bridge_seeds else [0]

    def seeds(self, m: Method) -> range:
        """Training seeds of a method: the main comparison's, and with --full the ablations
        through a trained Bridge variant (the round-trip row, a fixed map, keeps one)."""
        ablation = self.cfg.full and m in ABLATIONS and m.bridge in BRIDGES
        return range(self.cfg.train_seeds if m in MAIN or ablation else 1)

    def bridge_groups(self) -> dict[str, list[str]]:
        """Each Bridge variant's run names over its stage-1 seeds (and the round-trip's one)."""
        groups = {v: [_bridge_dir(self.out, v, s).name for s in self.bridge_seeds] for v in self.variants}
        return {**groups, "round-trip": ["round-trip"]}

    def timed(self, key: str, fn) -> None:
        start = time.time()
        fn()
        self.timings[key] = round(time.time() - start, 1)
        self.timings_path.write_text(json.dumps(self.timings, indent=1))
        self.log(f"{key} done in {self.timings[key]} s")

    def generate(self, model: str, folder: Path, batch: int) -> dict:
        """Generate (once) the demo's prompts x n_per_prompt with its seeds, and score them."""
        from .eval.harness import evaluate
        from .generate import GenerateConfig, generate

        if not (folder / "manifest.jsonl").exists():
            cfg = self.cfg
            self.timed(f"generate {folder.name}", lambda: generate(GenerateConfig(
                model, self.prompts, folder, n_per_prompt=cfg.n_per_prompt, seed=cfg.seed, batch_size=batch)))
        return evaluate(folder)

    # -- stages --------------------------------------------------------------------------
    def references(self) -> tuple[dict, dict]:
        """Real renders, the Teacher and the Student base (multi-step): rows and model names."""
        from .domains.data import export

        self.log.stage("real renders (reference row)")
        real = self.out / "generations" / "real"
        if not (real / "manifest.jsonl").exists():   # as many renders as each model makes images
            export(self.domain, len(self.prompts) * self.cfg.n_per_prompt, self.domain.size, real, seed=self.cfg.seed)
        from .eval.harness import evaluate

        rows, models = {REAL: evaluate(real)}, {}
        extra = [(f"Teacher (multi-step, {t})", t) for t in self.domain.extra_teachers] if self.cfg.full else []
        for label, model in ((TEACHER, self.domain.teacher), (BASE, self.domain.student), *extra):
            self.log.stage(f"{label}: generate {len(self.prompts) * self.cfg.n_per_prompt} images")
            rows[label] = self.generate(model, self.out / "generations" / model, 60)
            models[label] = model
        self.teacher_variety = rows[TEACHER].get("variety", {})   # the Students' cards give their spread as ratios
        return rows, models

    def bridges(self) -> dict:
        """Stage 1 for every Bridge variant, then their held-out evaluation (with the round-trip)."""
        from .bridge.evaluate import evaluate_runs
        from .bridge.stage1 import BridgeTrainConfig, train_bridge
        from .config import load_config
        from .data.sources import DataConfig
        from .io import atomic_file
        from .train import TrainConfig

        cfg = self.cfg
        runs, teachers = [], {}
        for variant in self.variants:
            for seed in self.bridge_seeds:
                run = _bridge_dir(self.out, variant, seed)
                runs.append(run)
                teachers[run] = self.bridge_teacher(variant)
                self.log.stage(f"stage 1: {run.name}")
                if not (run / "bridge" / "bridge.json").exists():
                    own = BRIDGES[variant] if teachers[run] == self.domain.teacher else {}   # an extra Teacher's: as is
                    sets = {"teacher": teachers[run], "student": self.domain.student, **own}
                    s1 = load_config(BridgeTrainConfig, self.domain.demo_configs["bridge"],
                                     [f"{k}={v}" for k, v in sets.items()])
                    s1 = dataclasses.replace(s1, data=DataConfig(images=cfg.bridge_images),
                                             train=TrainConfig(steps=cfg.bridge_steps, batch=32, checkpoint_every=100,
                                                               seed=seed))
                    self.timed(f"stage 1 {run.name}", lambda: train_bridge(s1, run))
        self.log.stage("stage 1: held-out Bridge evaluation")
        path = self.out / "bridge_eval.json"   # minutes of Teacher passes: kept for a resumed demo
        names = [r.name for r in runs] + ["round-trip"]
        fresh = path.exists() and all((r / "bridge" / "bridge.json").stat().st_mtime <= path.stat().st_mtime
                                      for r in runs)   # no Bridge retrained since
        if fresh and set(json.loads(path.read_text())) >= set(names):
            cached = json.loads(path.read_text())
            return {n: cached[n] for n in names}   # this run's Bridges only
        rows = {}
        for teacher in dict.fromkeys(teachers.values()):   # each Bridge against its own Teacher
            rows.update(evaluate_runs([r for r in runs if teachers[r] == teacher], teacher, self.domain.student,
                                      images=min(360, len(self.prompts) * 4),
                                      roundtrip=teacher == self.domain.teacher))
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(rows, indent=1))
        return rows

    def bridge_teacher(self, variant: str) -> str:
        """The Teacher a stage-1 variant bridges into (an extra Teacher's own variant, or the Teacher)."""
        extra = {extra_bridge(t): t for t in self.domain.extra_teachers}
        return extra.get(variant, self.domain.teacher)

    def stage2_config(self, m: Method, seed: int):
        """The method's recipe (a shipped config) with the demo's models, Bridges, budget and seed."""
        import yaml

        from .config import load_config
        from .distill import DistillConfig

        own = seed if self.cfg.bridge_seeds else 0   # the Bridge trained with this seed

        def bridge(variant):
            return variant if variant in ("identity", "roundtrip") else str(_bridge_dir(self.out, variant, own) / "bridge")

        def teacher(role):
            return {"teacher": self.domain.teacher, "student": self.domain.student}.get(role, role)

        sets = {"student": self.domain.student, "prompts": self.domain.name, "train.steps": self.cfg.distill_steps,
                "train.seed": seed,
                "train.sample_every": max(1, self.cfg.distill_steps // 3),   # the report's quality-versus-step curves
                **m.settings}
        recipe = load_config(DistillConfig, self.domain.demo_configs[m.recipe],
                             [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                              for k, v in sets.items()])
        # the recipe's Teacher settings (guidance) on each of the method's Teachers, weighted alike
        pairs = [(m.teacher, m.bridge), *m.also]
        one = recipe.teachers[0]
        teachers = [dataclasses.replace(one, model=teacher(t), bridge_dir=bridge(b),
                                        weight=one.weight if len(pairs) == 1 else 1.0 / len(pairs)) for t, b in pairs]
        return dataclasses.replace(recipe, teachers=teachers).validate()

    def student(self, m: Method, seed: int) -> tuple[dict, str]:
        """Stage 2 for one method and training seed, its export, generations and scores."""
        from .distill.diagnostics import last_logged
        from .distill.run import distill, stored_teachers
        from .hub import add_metrics

        slug = _seeded(m.slug, seed)
        self.log.stage(f"stage 2: {m.label}" + (f" (training seed {seed})" if seed else ""))
        run, student = self.out / "runs" / slug, self.out / "students" / slug
        s2 = self.stage2_config(m, seed)
        if (student / "crossdistill.json").exists() and (run / "config.json").exists():
            used = [t.get("bridge_dir") for t in stored_teachers(run)]
            want = [tc.bridge_dir for tc in s2.teachers]
            if list(map(_bridge_key, used)) != list(map(_bridge_key, want)):   # e.g. --bridge-seeds toggled on resume
                raise CrossdistillError(f"{student} was distilled through Bridge {' + '.join(map(str, used))}, not "
                                        f"{' + '.join(want)}; rerun with the same --bridge-seeds or choose another --out")
        if not (student / "crossdistill.json").exists():
            self.timed(f"stage 2 {slug}", lambda: distill(s2, run, self.train_prompts))
            student.parent.mkdir(parents=True, exist_ok=True)
            os.replace(run / "student", student)
        row = self.generate(str(student), self.out / "generations" / slug, 90)
        row["diagnostics"] = last_logged(run / "history.jsonl")
        add_metrics(student, card_metrics(row, self.teacher_variety, self.domain.name))   # into its card
        return row, str(student)

    def latency(self, models: dict) -> dict:
        from .eval.bench import bench

        self.log.stage("latency (same process, batch 1 and 8)")
        path = self.out / "latency.json"
        if path.exists() and set(json.loads(path.read_text())) == set(models):
            return json.loads(path.read_text())
        latency = bench(models, (1, 8), self.cfg.bench_repeats, reference=TEACHER)
        path.write_text(json.dumps(latency, indent=1))
        return latency

    def curves(self) -> dict[str, list[dict]]:
        """Adherence and clean images of each stage-2 run's sample grids, by step."""
        from .eval.curves import sample_curve

        rows = {m.label: sample_curve(self.out / "runs" / m.slug) for m in self.methods}
        return {k: v for k, v in rows.items() if v}

    def histories(self) -> dict[str, str]:
        """Where each training run's history.jsonl lies (the report plots them)."""
        h = {f"stage 1: {v}": str(_bridge_dir(self.out, v) / "history.jsonl") for v in self.variants}
        h.update({f"stage 2: {m.label}": str(self.out / "runs" / m.slug / "history.jsonl") for m in self.methods})
        return {k: v for k, v in h.items() if Path(v).exists()}


def card_metrics(row: dict, teacher_variety: dict, domain: str) -> dict:
    """A Student's evaluation row as its card's metrics (`domain/name`), with each free
    factor's spread as a ratio to the Teacher's (none where the Teacher's is 0)."""
    from .hub import flat_metrics

    card = dict(flat_metrics(row), **{f"variety_ratio_to_teacher/{k}": v / teacher_variety[k]
                                      for k, v in row.get("variety", {}).items() if teacher_variety.get(k)})
    return {f"{domain}/{k}": v for k, v in card.items()}


def run_demo(cfg: DemoConfig) -> dict:
    from .config import to_dict
    from .domains import get
    from .eval.bench import table as bench_table
    from .eval.harness import table
    from .eval.seeds import bridge_seed_summary, seed_summary
    from .report import provenance, write_report
    from .ui import console

    dom = get(cfg.domain)
    for name in (dom.teacher, dom.student, dom.classifier, *(dom.extra_teachers if cfg.full else ())):
        folder = dom.artifact(name) if name is not None else None
        if name is not None and (folder is None or not any((folder / f).exists() for f in
                                                           ("model_index.json", "model.safetensors"))):
            stages = f" --stage vae-{name} --stage {name}" if name in dom.extra_teachers else ""
            raise CrossdistillError(f"{dom.name} model {name} is missing; run "
                                    f"`crossdistill {dom.name} pretrain{stages} --install`")
    from .runtime import set_threads

    set_threads(cfg.threads)
    demo = Demo(cfg)
    cfg = demo.cfg
    rows, models = demo.references()
    console().print(table(rows))
    bridge_rows = demo.bridges()
    per_seed: dict[str, list[dict]] = {}
    for m in demo.methods:   # training seeds for the main comparison (and --full ablations); one for the rest
        for seed in demo.seeds(m):
            row, student = demo.student(m, seed)
            per_seed.setdefault(m.label, []).append(row)
            if seed == 0:
                rows[m.label], models[m.label] = row, student
    console().print(table(rows))
    latency = demo.latency(models)
    console().print(bench_table(latency))

    pairs = [(CROSS, SHARED)] + [(CROSS, m.label) for m in ABLATIONS if m.bridge in BRIDGES]   # paired by seed
    metrics = {"domain": cfg.domain, "generations": rows, "bridge": bridge_rows, "latency": latency,
               "seeds": seed_summary(per_seed, pairs) if cfg.train_seeds > 1 else {},
               "bridge_seeds": bridge_seed_summary(bridge_rows, demo.bridge_groups()) if len(demo.bridge_seeds) > 1
               else {},
               "wall_time_s": round(time.time() - demo.t0, 1), "resumed": demo.resumed,
               "stage_time_s": demo.timings, "n_per_prompt": cfg.n_per_prompt, "prompts": len(demo.prompts),
               "histories": demo.histories(), "curves": demo.curves(), "provenance": provenance(),
               "config": dict(to_dict(cfg), methods=[dataclasses.asdict(m) for m in demo.methods])}
    tmp = demo.out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1, default=str))
    tmp.replace(demo.out / "metrics.json")
    write_report(demo.out, metrics)
    demo.log(f"done in {metrics['wall_time_s']} s" + (" (resumed: this invocation only)" if demo.resumed else ""))
    print(f"\nwrote {demo.out / 'metrics.json'} and {demo.out / 'report.html'} ({metrics['wall_time_s']} s)")
    return metrics
