"""Specs: how the command line names a configured method or task.

`name` or `name[key=value,...]`, the keys being the dataclass fields of the registered class, e.g.
`sae-relu[l1_coeff=1e-3,tied=true]` or `toy_superposition[scale=paper]`. `key=a|b|c` (or `key=a,b,c`) is a
sweep: it expands to one spec per value (several swept keys give every combination). SAEs in a sweep train
together, in one pass over the activations.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
import types
import typing
from typing import Any

from bench.errors import BenchError

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.:-]+)(\[(?P<params>[^\]]*)\])?$")


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """`"sae-relu[l1_coeff=1e-3]"` -> `("sae-relu", {"l1_coeff": "1e-3"})`; `"pretrained:<dir>"` ->
    `("pretrained", {"path": "<dir>"})` (a directory may hold any character but a comma)."""
    if spec.strip().startswith("pretrained:"):
        return "pretrained", {"path": spec.strip()[len("pretrained:"):]}
    m = _SPEC.match(spec.strip())
    if not m:
        raise BenchError(f"cannot parse spec {spec!r}: write name or name[key=value,...]")
    params: dict[str, str] = {}
    key = None
    for item in filter(None, (p.strip() for p in (m.group("params") or "").split(","))):
        name, sep, value = item.partition("=")
        if sep:
            key = name.strip()
            params[key] = value.strip()
        elif key is not None:  # k=16,32,64: a bare value continues the previous key's sweep
            params[key] += "|" + item
        else:
            raise BenchError(f"spec {spec!r}: parameter {item!r} needs the form key=value")
    return m.group("name"), params


def method_matches(label: str, patterns: typing.Iterable[str]) -> bool:
    """Whether the method of a dictionary label (a spec, with or without a seed suffix) matches one of `patterns`
    (names, or shell patterns such as `sae-*`)."""
    from fnmatch import fnmatch

    from bench.seeds import split_seed

    name = parse_spec(split_seed(label)[0])[0]
    return any(fnmatch(name, p) for p in patterns)


def expand_spec(spec: str) -> list[str]:
    """`"sae-relu[l1_coeff=1e-3|3e-3,tied=true]"` -> one spec per combination of swept values."""
    name, params = parse_spec(spec)
    if name == "pretrained":
        return [spec.strip()]
    combos: list[dict[str, str]] = [{}]
    for key, value in params.items():
        combos = [{**c, key: v.strip()} for c in combos for v in value.split("|")]
    return [name + ("[" + ",".join(f"{k}={v}" for k, v in c.items()) + "]" if c else "") for c in combos]


def split_specs(text: str) -> list[str]:
    """Split a comma-separated list of specs on the commas that are not inside [...]."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def coerce(value: str, hint: Any, key: str, owner: str) -> Any:
    """Parse a spec value to its field's type (`int`, `float | None`, `tuple[int, ...]`, ...); a tuple is written
    with `+` between its items (`ks=1+5`), as commas already separate parameters and sweeps. Types only: ranges
    and whole numbers are `check_fields`' job (`k=2.5` parses to 2.5, which it then refuses by name)."""
    optional, hint = _unwrap_optional(hint)
    if optional and value.lower() == "none":
        return None
    if typing.get_origin(hint) is tuple:
        item = (typing.get_args(hint) or (str,))[0]
        return tuple(coerce(v.strip(), item, key, owner) for v in value.split("+") if v.strip())
    try:
        if hint is bool:
            if value.lower() not in {"true", "false", "1", "0"}:
                raise ValueError
            return value.lower() in {"true", "1"}
        if hint is int:
            number = float(value)
            return int(number) if number.is_integer() else number
        if hint is float:
            return float(value)
    except ValueError:
        raise BenchError(f"{owner}: {key}={value!r} is not a valid {hint.__name__}") from None
    return value


# --- field checks: one mechanism for every method's and task's settings ---------------------------------------
# A field declares what it accepts beyond its type with `param` (or `positive`, `non_negative`, `fraction`,
# `one_of`); `check_fields` enforces types and ranges. Method and Task call it in `__post_init__`, so specs,
# preset overrides and programmatic construction are all checked when the object is made, before any work.
CHECK = "bench.check"  # the dataclass field metadata key


@dataclasses.dataclass(frozen=True)
class Check:
    """Bounds, allowed values and evenness of a field (of each item, for a tuple field)."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] = ()
    even: bool = False  # e.g. prompt counts split half and half between two labels

    def requirement(self) -> str:
        parts = [f"> {_show(self.gt)}"] if self.gt is not None else []
        if self.ge is not None and self.le is not None:
            parts.append(f"between {_show(self.ge)} and {_show(self.le)}")
        else:
            parts += [f">= {_show(self.ge)}"] if self.ge is not None else []
            parts += [f"<= {_show(self.le)}"] if self.le is not None else []
        return (("an even number " if self.even else "") + " and ".join(parts)).strip()

    def problem(self, owner: str, key: str, value: Any) -> str | None:
        if self.choices:
            if value not in self.choices:
                return f"{owner}: unknown {key} {value!r}; choose from {', '.join(map(str, self.choices))}"
            return None
        if ((self.gt is not None and not value > self.gt) or (self.ge is not None and not value >= self.ge)
                or (self.le is not None and not value <= self.le) or (self.even and value % 2)):
            return f"{owner}: {key}={_show(value)} must be {self.requirement()}"
        return None


def param(default: Any = dataclasses.MISSING, *, gt: float | None = None, ge: float | None = None,
          le: float | None = None, choices: tuple[Any, ...] = (), even: bool = False, **field_kwargs: Any) -> Any:
    """A dataclass field with a checked range: `k: int = param(32, gt=0)`, `scale: str = param("fast",
    choices=("smoke", "fast", "paper"))`. None, where the type allows it, always passes."""
    return dataclasses.field(default=default, metadata={CHECK: Check(gt, ge, le, tuple(choices), even)},
                             **field_kwargs)


def positive(default: Any) -> Any:
    """> 0: counts, sizes, learning rates, tolerances."""
    return param(default, gt=0)


def non_negative(default: Any) -> Any:
    """>= 0: penalty coefficients, warm-up steps, seeds."""
    return param(default, ge=0)


def fraction(default: Any) -> Any:
    """Between 0 and 1: shares, probabilities, cosine thresholds."""
    return param(default, ge=0, le=1)


def one_of(default: str, *choices: str) -> Any:
    """One of `choices` (an unknown value is refused with the list): `one_of("unit", "unit", "free")`."""
    return param(default, choices=choices)


def _show(value: Any) -> str:
    """A value as a user would write it in a spec (`0`, `2.5`, `nan`, `0.001`)."""
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def _unwrap_optional(hint: Any) -> tuple[bool, Any]:
    """`int | None` -> (True, int); `int` -> (False, int)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return True, args[0]
    return False, hint


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Each field's resolved type hint; where annotations cannot be resolved, the type of its default (a None
    default reads as `int | None`, as specs always did)."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation naming what its module imports only for type checkers
        hints = {}
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in hints:
            out[f.name] = hints[f.name]
        elif f.default is not dataclasses.MISSING:
            out[f.name] = int | None if f.default is None else type(f.default)
        else:
            out[f.name] = Any
    return out


def _checked(owner: str, key: str, value: Any, hint: Any, check: Check | None) -> Any:
    """`value` normalised to its field's type (1e3 -> 1000 for an int, 2 -> 2.0 for a float), or a BenchError."""
    optional, hint = _unwrap_optional(hint)
    if value is None and optional:
        return None
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (tuple, list)):
            raise BenchError(f"{owner}: {key}={_show(value)} is not a list of values (write a+b+c)")
        if not value:
            raise BenchError(f"{owner}: {key} needs at least one value")
        item = (typing.get_args(hint) or (Any,))[0]
        return tuple(_checked(owner, key, v, item, check) for v in value)
    wrong = None
    if hint is bool:
        wrong = None if isinstance(value, bool) else "is not true or false"
    elif hint is int:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
                and float(value).is_integer():
            value = int(value)
        else:
            wrong = "is not an integer"
    elif hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            value = float(value)
        else:
            wrong = "is not a finite number"
    elif hint is str:
        wrong = None if isinstance(value, str) else "is not a string"
    if wrong:
        raise BenchError(f"{owner}: {key}={_show(value)} {wrong}")
    if check is not None and (problem := check.problem(owner, key, value)):
        raise BenchError(problem)
    return value


def check_fields(obj: Any) -> None:
    """Check every field of a dataclass instance against its type and `param` range; normalise numbers in place
    (frozen dataclasses too). The error names the owner (`obj.name`), the field, the value and what it must be."""
    owner = getattr(obj, "name", "") or type(obj).__name__
    hints = field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        new = _checked(owner, f.name, value, hints.get(f.name, Any), f.metadata.get(CHECK))
        if new is not value:
            object.__setattr__(obj, f.name, new)


def settable_fields(cls: type, exclude: set[str] = frozenset()) -> dict[str, Any]:
    """A dataclass's fields a user may set, with their defaults."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return out


def build(spec: str, registry: dict[str, type], kind: str, overrides: dict[str, Any] | None = None,
          exclude: set[str] = frozenset(), **fixed: Any) -> Any:
    """Instantiate `registry[name]` from a spec: preset `overrides` first, the spec's params win."""
    name, params = parse_spec(spec)
    if name not in registry:
        raise BenchError(f"unknown {kind} {name!r}; choose from {', '.join(registry)} (see `python -m bench list`)")
    cls = registry[name]
    fields = settable_fields(cls, exclude)
    kwargs: dict[str, Any] = {k: v for k, v in (overrides or {}).items() if k in fields}
    for key, value in params.items():
        if key not in fields or dataclasses.is_dataclass(fields[key]):
            settable = [k for k, v in fields.items() if not dataclasses.is_dataclass(v)]
            raise BenchError(f"{name} has no parameter {key!r}; it takes {', '.join(settable) or 'none'}")
        kwargs[key] = coerce(value, field_types(cls)[key], key, name)
    obj = cls(**fixed, **kwargs)
    check_fields(obj)  # (again, for a plugin class whose own __post_init__ does not call its base's)
    return obj


def canonical_label(obj: Any, defaults: dict[str, Any] | None = None, exclude: set[str] = frozenset()) -> str:
    """`name` plus the fields that differ from the class and preset defaults: a stable label for results
    (a class may name itself instead, through a `label()` method)."""
    if callable(getattr(obj, "label", None)):
        return obj.label()
    base = settable_fields(type(obj), exclude)
    base.update({k: v for k, v in (defaults or {}).items() if k in base})
    diff = {k: getattr(obj, k) for k in base if getattr(obj, k) != base[k]}
    if not diff:
        return obj.name
    show = lambda v: "+".join(map(str, v)) if isinstance(v, tuple) else str(v)  # noqa: E731 - as `coerce` reads it
    return obj.name + "[" + ",".join(f"{k}={show(v)}" for k, v in sorted(diff.items())) + "]"
