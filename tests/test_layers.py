"""The package's layers hold: no import cycle between modules (imports inside functions
count: they run too), and no layer imports one above it (docs/design.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import crossdistill

# each top-level module or subpackage and its layer: a module may import its own layer and those below
LAYERS = [("errors", "hub_ids", "ui"),
          ("checks",),
          ("text", "io", "runtime", "spaces", "attention"),
          ("presets",),
          ("domains", "artifacts", "data", "config"),   # the domain registry and plug-ins; named models, data
                                                         # and configs (the library's and the domains')
          ("denoisers",),
          ("train", "generate", "hub", "eval"),
          ("bridge",),
          ("distill",),
          ("pretrain", "report", "app"),
          ("demo",),
          ("cli",)]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its code. Importing a.b.c runs
    a.b's __init__ first, so it counts as importing a.b too (except a module's own packages)."""
    mods = {}
    for p in root.rglob("*.py"):
        parts = [package, *p.relative_to(root).with_suffix("").parts]
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for m, p in mods.items():
        own = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = own[:len(own) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                deps |= {f"{name}.{a.name}" for a in node.names} | {name}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        edges = set()
        for d in deps:
            parts = d.split(".")
            for k in range(2, len(parts) + 1):
                anc = ".".join(parts[:k])
                if anc in mods and anc != m and not m.startswith(anc + "."):
                    edges.add(anc)
        graph[m] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_breaks(graph: dict[str, set[str]]) -> list[str]:
    top = lambda m: m.split(".")[1] if "." in m else ""   # noqa: E731
    return sorted(f"{m} -> {d}" for m, ds in graph.items() for d in ds
                  if top(m) in RANK and top(d) in RANK and RANK[top(d)] > RANK[top(m)])


ROOT = Path(crossdistill.__file__).parent


def test_no_import_cycle():
    assert cycles(module_graph(ROOT, "crossdistill")) == []


def test_every_top_level_module_has_a_layer():
    names = {p.stem if p.suffix == ".py" else p.name for p in ROOT.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert names == set(RANK)


def test_no_layer_imports_one_above_it():
    assert layer_breaks(module_graph(ROOT, "crossdistill")) == []


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path):
    """The checker itself: a cycle closed only by a function-level import, through a
    package __init__, is reported."""
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("from .leaf import f\n")
    (pkg / "low" / "leaf.py").write_text("def f():\n    from ..high import g\n    return g\n")
    (pkg / "high.py").write_text("from .low.leaf import f\n")
    assert cycles(module_graph(pkg, "pkg")) == [["pkg.high", "pkg.low", "pkg.low.leaf"]]
    (pkg / "low" / "leaf.py").write_text("def f():\n    return 1\n")
    assert cycles(module_graph(pkg, "pkg")) == []


def test_the_library_imports_no_world():
    """The shapes worlds are a plug-in distribution (`worlds/`): no module of the library
    names them; they arrive through the registry's entry points."""
    naming = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if "crossdistill_worlds" in p.read_text()]
    assert naming == []
