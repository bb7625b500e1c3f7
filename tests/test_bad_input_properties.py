"""Property-based bad input (docs/bad_input.md, "The rule"): every command's numeric and
string options and every config key, given generated values (negative, zero, NaN,
infinities, huge, empty, wrong-typed), either run or exit 2 with one `error:` line, never a
traceback, never a file written for a refused value.

The cases are drawn from what each option and config field declares it accepts
(`checks.Accepts`, on the options as `.accepts`, on the fields as metadata): a new option
or key is covered without a new test, and one that declares nothing fails
`test_every_number_declares_what_it_accepts`."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli
from crossdistill.bridge.stage1 import BridgeTrainConfig
from crossdistill.checks import Accepts, declared
from crossdistill.cli import app
from crossdistill.distill.config import DistillConfig
from crossdistill.generate import GenerateConfig

FAST = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# -- what is declared ---------------------------------------------------------------------
def commands(typer_app=app, path=()):
    """(command path, function) of every command of the CLI, the domains' included."""
    for c in typer_app.registered_commands:
        yield (*path, c.name or c.callback.__name__.replace("_", "-")), c.callback
    for g in typer_app.registered_groups:
        yield from commands(g.typer_instance, (*path, g.name))


def options(fn):
    """(flag, python type, Accepts or None) of a command's options that take a number or a string."""
    hints = typing.get_type_hints(fn)
    for name, p in inspect.signature(fn).parameters.items():
        info = p.default
        if type(info).__name__ != "OptionInfo":
            continue
        tp = _scalar(hints[name])
        if tp in (int, float, str):
            flag = max(info.param_decls, key=len) if info.param_decls else "--" + name.rstrip("_").replace("_", "-")
            yield flag, tp, getattr(info, "accepts", None)


def _scalar(tp):
    """int for int, Optional[int], List[int]; likewise float and str."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return _scalar(args[0]) if args else tp


def config_fields(cls, prefix=""):
    """(dotted key, python type, Accepts or None) of every leaf field of a config class."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if dataclasses.is_dataclass(tp):
            yield from config_fields(tp, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) is list and inner and dataclasses.is_dataclass(inner[0]):
            yield from config_fields(inner[0], f"{prefix}{f.name}.0.")
        else:
            yield prefix + f.name, _scalar(tp), declared(f)


CLI_OPTIONS = [(cmd, flag, tp, acc) for cmd, fn in commands() for flag, tp, acc in options(fn)]
STAGES = {"distill": (DistillConfig, "distill_shapes"), "bridge train": (BridgeTrainConfig, "bridge_shapes")}
CONFIG_KEYS = [(stage, key, tp, acc) for stage, (cls, _) in STAGES.items() for key, tp, acc in config_fields(cls)]


def test_every_number_declares_what_it_accepts():
    """Every numeric option of every command and every numeric config key declares its range."""
    assert len(CLI_OPTIONS) > 30 and len(CONFIG_KEYS) > 60
    missing = [f"{' '.join(c)} {flag}" for c, flag, tp, acc in CLI_OPTIONS if tp in (int, float) and acc is None]
    missing += [f"{s}: {k}" for s, k, tp, acc in CONFIG_KEYS if tp in (int, float) and acc is None]
    missing += [f"generate: {f.name}" for f in dataclasses.fields(GenerateConfig)
                if f.type in ("int", "float", "int | None", "float | None") and declared(f) is None]
    assert not missing, f"declare what these accept (checks.accepts / options.checked): {missing}"


# -- the cases a declaration gives ---------------------------------------------------------
def refused(acc: Accepts | None, tp) -> st.SearchStrategy:
    """Values the declaration refuses, as typed on a command line: just outside each bound,
    far outside, NaN and the infinities, the wrong type, the empty string."""
    wrong = st.sampled_from(["abc", "", " ", "1x", "[1]", "{a: 1}", "None"]) if tp in (int, float) else st.nothing()
    if acc is None:
        return wrong
    if acc.choices is not None:
        return st.text(min_size=1, max_size=12).filter(lambda s: s.strip() and s not in map(str, acc.choices)
                                                        and not s.startswith("-") and s.isprintable()) | wrong
    if acc.nonempty:
        return st.sampled_from(["", " ", "  "])
    cases = [wrong]
    for bound, strict, below in ((acc.ge, False, True), (acc.gt, True, True), (acc.le, False, False),
                                 (acc.lt, True, False)):
        if bound is None:
            continue
        if tp is int:   # the nearest integers outside, and beyond
            cases.append(st.integers(max_value=math.ceil(bound) - (0 if strict else 1)) if below else
                         st.integers(min_value=math.floor(bound) + (0 if strict else 1)))
        else:
            edge = bound if strict else math.nextafter(bound, -math.inf if below else math.inf)
            cases.append(st.floats(max_value=edge, allow_nan=False, allow_infinity=False) if below else
                         st.floats(min_value=edge, allow_nan=False, allow_infinity=False))
            cases.append(st.just(edge))
        cases.append(st.just(-10**30 if below else 10**30))
    if tp is float:
        cases.append(st.sampled_from([math.nan, math.inf, -math.inf]))
    return st.one_of(cases)


def fmt(v) -> str:
    return {math.inf: "inf", -math.inf: "-inf"}.get(v, "nan" if isinstance(v, float) and math.isnan(v) else str(v))


def one_line_refusal(p, name: str):
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2, (p.returncode, p.stderr[-1500:])
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr[-1500:]
    assert name in err[0], err[0]


# -- the command line ----------------------------------------------------------------------
# a base invocation of each command that is valid but for the option under test (none runs:
# the refused value stops it while the flags are read); {o} is the output folder
BASE = {
    ("generate",): "--model shapes-teacher --prompt 'a red square on the left' --out {o}",
    ("eval",): "{o}/gens --model shapes-teacher --prompts-file {o}/p.txt --out {o}/gens",
    ("app",): "--model shapes-teacher",
    ("bench",): "--model t=shapes-teacher",
    ("demo",): "--out {o}",
    ("distill",): "distill_shapes --out {o}",
    ("bridge", "train"): "bridge_shapes --out {o}",
    ("bridge", "bank"): "bridge_shapes --out {o}",
    ("bridge", "eval"): "{o} --teacher shapes-teacher --student shapes-student-base --out {o}/t.json",
    ("shapes", "export"): "--n 2 --out {o}",
    ("pairs", "export"): "--n 2 --out {o}",
    ("shapes", "pretrain"): "--out {o}",
    ("pairs", "pretrain"): "--out {o}",
    ("push",): "{o} someone/repo",
    ("card",): "{o}",
}
CHECKED = [(c, flag, tp, acc) for c, flag, tp, acc in CLI_OPTIONS if acc is not None and c in BASE]


def test_the_options_under_test_cover_every_declared_one():
    """No command whose options declare ranges is left out of BASE."""
    assert {c for c, _, _, acc in CLI_OPTIONS if acc is not None} <= set(BASE)


@pytest.mark.parametrize("cmd,flag,tp,acc", CHECKED, ids=[f"{' '.join(c)} {f}" for c, f, _, _ in CHECKED])
def test_a_refused_flag_is_one_line_and_writes_nothing(tmp_path_factory, cmd, flag, tp, acc):
    import shlex

    @FAST
    @given(value=refused(acc, tp))
    def check(value):
        out = tmp_path_factory.mktemp("o") / "out"
        # the flag first: click reads the options in the order given, so nothing else is checked before it
        base = shlex.split(BASE[cmd].format(o=out))
        if flag in base:   # the base's own value of this flag goes
            del base[base.index(flag):base.index(flag) + 2]
        p = run_cli(*cmd, flag, fmt(value), *base)
        one_line_refusal(p, flag)   # ours, or click's for a wrong type ("Invalid value for '--steps'")
        assert not out.exists()

    check()


def test_generate_in_range_values_run_and_write_valid_json(tmp_path_factory):
    """Values inside the declared ranges of generate's numbers run (steps capped at 3 to stay
    fast) and the manifest is strict JSON (no NaN)."""
    acc = dict((f, a) for c, f, _, a in CLI_OPTIONS if c == ("generate",))

    @settings(max_examples=6, deadline=None, derandomize=True)
    @given(steps=st.integers(int(acc["--steps"].ge), 3),
           guidance=st.floats(acc["--guidance"].ge, acc["--guidance"].le, allow_nan=False),
           seed=st.integers(int(acc["--seed"].ge), int(acc["--seed"].le)))
    def check(steps, guidance, seed):
        out = tmp_path_factory.mktemp("g") / "out"
        p = run_cli("generate", "--model", "shapes-teacher", "--prompt", "a red square on the left", "--out", out,
                    "--steps", steps, "--guidance", repr(guidance), "--seed", seed, "--threads", 1)
        assert p.returncode == 0, p.stderr[-1500:]
        row = json.loads((out / "manifest.jsonl").read_text().splitlines()[0],
                         parse_constant=lambda c: pytest.fail(f"{c} in the manifest"))
        assert row["steps"] == steps and row["seed"] == seed

    check()


# -- config keys (YAML and --set read them alike) -------------------------------------------
WEIRD = st.sampled_from([".nan", ".inf", "-.inf", "0", "-1", "1e308", "-1e308", "10000000000000000000000", "''",
                         "abc", "[1, 2]", "{a: 1}", "true", "null", "0.5", "2"])


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_config_key_refuses_bad_values_in_one_line(stage, tmp_path_factory):
    """`--set KEY=VALUE` for every key of the stage's config and generated values (the weird
    ones above, and those its declaration refuses): a resolved config (exit 0) or one line
    naming the key (exit 2); a value the declaration refuses is never accepted."""
    cls, config = STAGES[stage]
    keys = [(k, tp, acc) for s, k, tp, acc in CONFIG_KEYS if s == stage]

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.data())
    def check(data):
        key, tp, acc = data.draw(st.sampled_from(keys))
        value = data.draw(WEIRD | refused(acc, tp).map(fmt) if tp in (int, float) else WEIRD)
        out = tmp_path_factory.mktemp("c") / "out"
        p = run_cli(*stage.split(), config, "--out", out, "--dry-run", "--set", f"{key}={value}")
        assert p.returncode in (0, 2), p.stderr[-1500:]
        if p.returncode == 2:
            one_line_refusal(p, key.split(".")[-1].split("[")[0])
        else:
            import yaml
            from crossdistill.config import load_config

            cfg = load_config(cls, config, [f"{key}={value}"])   # what was printed is what runs
            got = yaml.safe_load(p.stdout)
            assert got is not None
            leaf = cfg
            for part in key.split("."):
                leaf = leaf[int(part)] if part.isdigit() else getattr(leaf, part)
            for item in (leaf if isinstance(leaf, (list, tuple)) else [leaf]):
                assert not (isinstance(item, float) and not math.isfinite(item)), (key, value)
                assert acc is None or not acc.problem(item), (key, value, acc)
        assert not out.exists()

    check()


@pytest.mark.parametrize("flag,value", [("--steps", "-3"), ("--steps", "0"), ("--guidance", "nan")])
def test_the_three_cases_a_new_user_found(tmp_path, flag, value):
    """Issue 32's tries (a traceback, a silent 28 steps, a black image with NaN in the
    manifest): each is now one line, and nothing is written. The property test above draws
    them too; here they are by name."""
    out = tmp_path / "out"
    p = run_cli("generate", "--model", "shapes-teacher", "--prompt", "a red square on the left", "--out", out,
                "--threads", 1, flag, value)
    one_line_refusal(p, flag)
    assert not out.exists()
