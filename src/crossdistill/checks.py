"""What a value accepts, declared once and checked in one place.

Every config field and CLI option that takes a number or a string declares what it
accepts (`Accepts`: bounds, choices, finite, not empty). One checker, `Accepts.check`,
enforces it for YAML, `--set` and flags alike (`config.from_dict` calls it on every
field, a `Checked` config on itself when built in code, the CLI's `checked` options from
their callback), and its message names the key, the value and what is allowed:

    train.steps must be >= 1, got -3

A float field without a declaration still refuses NaN and infinities (`check_field`):
no non-finite number reaches a library call from a config or a flag.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .errors import CrossdistillError, choice_error


@dataclass(frozen=True)
class Accepts:
    """What one value accepts. Numbers: bounds (`ge` >=, `gt` >, `le` <=, `lt` <) and, for
    floats, finiteness (on unless `finite=False`). Strings: `choices`, or `nonempty`.
    Lists and tuples: each item is checked."""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    finite: bool = True
    nonempty: bool = False
    casefold: bool = False   # choices: any case (`FP16` as `fp16`)

    def describe(self, integer: bool = False) -> str:
        """`>= 1`, `in (0, 1)`, `one of a, b`, `a finite number`."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.nonempty:
            return "a non-empty string"
        lo = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        hi = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return f"{'>=' if self.ge is not None else '>'} {lo[1:]}"
        if hi:
            return f"{'<=' if self.le is not None else '<'} {hi[:-1]}"
        return "an integer" if integer else "a finite number" if self.finite else "a number"

    def problem(self, value: Any) -> bool:
        """True when `value` (one item) is outside what this accepts."""
        if value is None:
            return False
        if self.choices is not None:
            return (value.lower() if self.casefold and isinstance(value, str) else value) not in self.choices
        if isinstance(value, str):
            return self.nonempty and not value.strip()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False   # types are config.from_dict's job
        if isinstance(value, float) and not math.isfinite(value):
            return self.finite or math.isnan(value)
        return ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
                or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt))

    def check(self, name: str, value: Any) -> Any:
        """`value`, or a one-line error naming `name`, the value and what is allowed."""
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if self.problem(item):
                if self.choices is not None:
                    raise choice_error(name, item, self.choices)
                whole = "" if item is value else f" (in {list(value)})"
                raise CrossdistillError(f"{name} must be {self.describe(isinstance(item, int))}, "
                                        f"got {item!r}{whole}")
        return value


FINITE = Accepts()
# limits shared by configs and flags
SEED = {"ge": 0, "le": 2**32 - 1}   # every seed (torch generators take < 2**64; training multiplies it by ~1e6)
MAX_RES = 8192                      # image side in pixels
SIZE = {"ge": 1, "le": MAX_RES}     # an image height, width or resolution
SAMPLING_STEPS = {"ge": 1, "le": 1000}   # a sampler's steps (a diffusion schedule has 1000)
GUIDANCE = {"ge": 0, "le": 100}     # a CFG scale
IMAGES = {"ge": 1, "le": 10**6}     # images per prompt, per batch, per evaluation
THREADS = {"ge": 0, "le": 1024}     # torch CPU threads (0: torch's default)
DTYPE = {"choices": ("auto", "fp32", "fp16", "bf16"), "casefold": True}   # an inference dtype (runtime.pick_dtype)


def accepts(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            **kw) -> Any:
    """A dataclass field that declares what it accepts: `steps: int = accepts(1000, ge=1)`."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"accepts": Accepts(**kw)})


def declared(f: dataclasses.Field) -> Accepts | None:
    """A field's declaration, if it has one."""
    return f.metadata.get("accepts")


def check_field(f: dataclasses.Field, name: str, value: Any) -> Any:
    """One field's value against its declaration (a float without one: finite)."""
    rule = declared(f)
    if rule is None and _holds_floats(value):
        rule = FINITE
    return value if rule is None else rule.check(name, value)


def check_fields(obj: Any, prefix: str = "") -> Any:
    """Every field of a dataclass instance against its declaration (not the nested
    dataclasses: each checks itself)."""
    for f in dataclasses.fields(obj):
        check_field(f, prefix + f.name, getattr(obj, f.name))
    return obj


def check_values(cls: type, values: dict, prefix: str = "") -> dict:
    """`values` for the fields of dataclass `cls` against their declarations, before it is
    built (`config.from_dict`: the message names the dotted key, e.g. `train.steps`)."""
    for f in dataclasses.fields(cls):
        if f.name in values:
            check_field(f, prefix + f.name, values[f.name])
    return values


class Checked:
    """A config dataclass that checks its declared fields whenever it is built: from YAML
    and `--set` (`config.from_dict`, which names the dotted key first), in code, or by
    `dataclasses.replace`. `KEY`: where it usually sits in a config (`train.`), for the
    messages of one built in code."""
    KEY = ""

    def __post_init__(self):
        check_fields(self, self.KEY)


def _holds_floats(value: Any) -> bool:
    items = value if isinstance(value, (list, tuple)) else [value]
    return any(isinstance(v, float) for v in items)


def _num(x: float) -> str:
    """1000000000 as written, 0.5 as 0.5, 1e-08 as 1e-08."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"
