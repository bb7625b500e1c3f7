"""Typed nested dataclass configs from YAML plus dotted overrides.

`load_config(Cls, "distill_shapes", ["train.steps=100"])` reads a shipped config by
name (`named_configs()`: the library's and each domain's) or a YAML file by path, and
validates every key and type: an unknown key is an error that suggests the closest
known one; a value of the wrong type names the key, the value and the expected type; a
value outside what its field declares it accepts (`checks.accepts`) names the key, the
value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .checks import check_values, declared
from .errors import CrossdistillError, choice_error

T = TypeVar("T")


def _unknown(key: str, allowed, where: str) -> CrossdistillError:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return CrossdistillError(f"unknown config key '{where}{key}'{hint}; allowed: {', '.join(sorted(allowed))}")


def _coerce(value: Any, tp, key: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except CrossdistillError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and hasattr(tp, "from_str"):   # a shorthand the class declares
            obj = tp.from_str(value)
            return obj.validate() if hasattr(obj, "validate") else obj
        if not isinstance(value, dict):
            raise CrossdistillError(f"config key '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise CrossdistillError(f"config key '{key}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):   # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not
                                               (tp is int and isinstance(value, bool))):
        hint = " (YAML reads no/yes/off/on as booleans: quote it, e.g. 'no')" if tp is str and isinstance(value, bool) else ""
        raise CrossdistillError(f"config key '{key}' must be {tp.__name__}, got {value!r}{hint}")
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        if k not in fields:
            raise _unknown(k, fields, prefix)
        kwargs[k] = _coerce(v, hints[k], prefix + k)
    obj = cls(**check_values(cls, kwargs, prefix))   # every field against what it declares it accepts
    if hasattr(obj, "validate"):
        obj.validate()   # what involves several fields
    return obj


def _set_dotted(data: dict, dotted: str, value) -> None:
    """data[a][b]... = value for "a.b..."; a number indexes a list (`teachers.0.guidance=3`)."""
    keys = dotted.split(".")
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(data, list):
            if not (k.isdigit() and int(k) < len(data)):
                raise CrossdistillError(f"cannot set '{dotted}': '{k}' is not an index of "
                                        f"'{'.'.join(keys[:i])}' (0..{len(data) - 1})")
            k = int(k)
        elif not isinstance(data, dict):
            raise CrossdistillError(f"cannot set '{dotted}': '{keys[i - 1]}' is not a mapping")
        if last:
            data[k] = value
        else:
            if isinstance(data, dict):
                data = data.setdefault(k, {})
            else:
                data = data[k]
            if isinstance(data, str):   # a shorthand list item (`teachers: [NAME]`)
                raise CrossdistillError(f"cannot set '{dotted}': '{keys[i]}' is {data!r}, not a mapping; "
                                        f"write the item as a mapping (model: {data})")


_SHIPPED = Path(__file__).parent / "configs"


def named_configs() -> dict[str, Path]:
    """The configs shipped with the library (real models) and with each domain, by name."""
    from .domains import get, names

    folders = [_SHIPPED] + [folder for folder in (get(d).configs for d in names()) if folder is not None]
    return {p.stem: p for folder in folders for p in sorted(Path(folder).glob("*.yaml"))}


def find_config(spec: str | Path) -> Path:
    """A YAML file by path, or a shipped config by name."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = named_configs()
    if str(spec) in shipped:
        return shipped[str(spec)]
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise CrossdistillError(f"config file not found: {path}")
    raise choice_error("config", str(spec), shipped)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """`path`: a YAML file or a shipped config's name (None: the class's defaults)."""
    data: dict = {}
    if path is not None:
        path = find_config(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise CrossdistillError(f"malformed YAML in {path}{where}: {getattr(e, 'problem', e)}") from None
        if not isinstance(data, dict):
            raise CrossdistillError(f"config {path} must be a mapping at the top level")
    for item in overrides:
        if "=" not in item:
            raise CrossdistillError(f"override {item!r} must look like key.sub=value")
        k, v = item.split("=", 1)
        value = yaml.safe_load(v)
        if isinstance(value, bool) and v.strip().lower() not in ("true", "false"):
            value = v.strip()    # --set a=no means the string "no" (YAML 1.1 would read False)
        _set_dotted(data, k.strip(), value)
    return from_dict(cls, data)


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def write_config(obj, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))


def _field_help(cls) -> dict[str, str]:
    """Each field's one-line help: the comment after it in the class source (the
    dataclasses document themselves that way), continuation comment lines joined."""
    import inspect
    import re

    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    helps: dict[str, str] = {}
    last = None
    for line in lines:
        m = re.match(r"\s+(\w+)\s*:[^#]*?(?:#\s*(.*))?$", line)
        if m and not line.strip().startswith("#") and m.group(1) in {f.name for f in dataclasses.fields(cls)}:
            last = m.group(1)
            helps[last] = (m.group(2) or "").strip()
            continue
        c = re.match(r"\s+#\s*(.*)$", line)
        if c and last is not None and helps.get(last):
            helps[last] += " " + c.group(1).strip()
        else:
            last = None
    return helps


def _type_name(tp) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    import re
    # module paths off: list[TeacherConfig], not list[crossdistill.distill.config.TeacherConfig]
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(tp).replace("NoneType", "None"))


def config_keys(cls, prefix: str = "", values=None) -> list[tuple[str, str, Any, str]]:
    """Every key of a config class, dotted: (key, type, default or the given config's value, help)."""
    hints = typing.get_type_hints(cls)
    helps = _field_help(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        value = getattr(values, f.name) if values is not None else (
            f.default if f.default is not dataclasses.MISSING else
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(tp):
            rows += config_keys(tp, f"{prefix}{f.name}.", value)
            continue
        rule = declared(f)
        text = helps.get(f.name, "") + (f" [{rule.describe(tp is int)}]" if rule else "")
        rows.append((prefix + f.name, _type_name(tp), list(value) if isinstance(value, tuple) else value, text.strip()))
    return rows
