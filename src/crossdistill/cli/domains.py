"""Model presets and the domains' own commands: `presets`, `<domain> export | pretrain`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import CrossdistillError
from ..checks import SEED, SIZE
from .options import MAX_IMAGES, THREADS, checked

PRESET_KINDS = {"full": "architecture only: no weights (bench --full-size, tests); load real weights by hub id",
                "tiny": "random-weight test size (tests)"}


def presets() -> None:
    """List the model presets: full-size architectures (no weights), tiny test sizes, and the
    domains' trained models (the only presets `--model` accepts by name)."""
    import json

    from ..artifacts import resolve
    from ..domains import get, names
    from ..presets import preset_names

    rows = [(name, path.parent.name, path) for name, path in preset_names().items()]
    for d in names():   # each domain's own models
        folder = get(d).presets
        rows += [(p.stem, d, p) for p in sorted(folder.glob("*.json"))] if folder is not None else []
    print(f"{'preset':22s} {'family':6s} {'kind':6s} what it is")
    for name, kind, path in rows:
        p = json.loads(path.read_text())
        what = PRESET_KINDS.get(kind) or ("trained model shipped with the project: --model " + name
                                          if resolve(name) != name else "a domain's architecture (weights not installed)")
        src = f" (weights: {p['source']})" if p.get("source") else ""
        print(f"{name:22s} {p['family']:6s} {kind:6s} {what}{src}")


def domain_app(name: str) -> typer.Typer:
    """`crossdistill <domain> export|pretrain` for one registered domain."""
    sub = typer.Typer(no_args_is_help=True, help=f"The {name} domain: data, pretraining of its models.")

    @sub.command("export")
    def export_cmd(n: int = checked(..., "--n", help="number of scenes", ge=1, le=MAX_IMAGES),
                   size: int = checked(64, help="the domain's size or half of it (2x2-averaged)", **SIZE),
                   out: Path = typer.Option(..., help="output folder (PNGs + manifest.jsonl)"),
                   seed: int = checked(0, help="scene i of a seed is always the same", **SEED)) -> None:
        """Export N scenes as PNGs plus manifest.jsonl (prompt and scene parameters)."""
        from ..domains import get
        from ..domains.data import export

        dom = get(name)
        if size not in (dom.size, dom.size // 2):
            raise CrossdistillError(f"--size must be {dom.size} or {dom.size // 2}, got {size}")
        if n < 1:
            raise CrossdistillError(f"--n must be >= 1, got {n}")
        export(dom, n, size, out, seed)
        print(f"wrote {n} scenes to {out}")

    @sub.command("pretrain")
    def pretrain_cmd(out: Path = typer.Option(Path(f"runs/pretrain-{name}"), help="run folder (stages resume here)"),
                     stage: Optional[List[str]] = typer.Option(None, help="stage(s) to run; default all"),
                     seed: int = checked(0, help="the pretraining seed", **SEED),
                     threads_: int = THREADS,
                     quick: bool = typer.Option(False, help="tiny budgets for a smoke test (useless models)"),
                     install: bool = typer.Option(False, help="copy finished models into the domain's "
                                                  "named artifacts")) -> None:
        """Train the domain's VAEs, Teacher, Student base and classifier from a seed (rerun to resume)."""
        from ..domains import get
        from ..pretrain import install_artifacts, pretrain, pretrain_config

        dom = get(name)
        pretrain(dom, out, stage or None, pretrain_config(dom, seed, quick), threads=threads_)
        if install:
            install_artifacts(dom, out)

    return sub


def register(app: typer.Typer) -> None:
    from ..domains import names

    app.command("presets")(presets)
    taken = {c.name or c.callback.__name__ for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for name in names():
        if name in taken:   # a plug-in may not shadow a command
            print(f"warning: domain {name!r} has the name of a crossdistill command; its export / pretrain "
                  f"commands are not added", file=sys.stderr)
            continue
        app.add_typer(domain_app(name), name=name)
