"""Specs: how the command line names a configured method or task.

`name` or `name[key=value,...]`, the keys being the dataclass fields of the registered class, e.g.
`sae-relu[l1_coeff=1e-3,tied=true]` or `toy_superposition[scale=paper]`. `key=a|b|c` (or `key=a,b,c`) is a
sweep: it expands to one spec per value (several swept keys give every combination). SAEs in a sweep train
together, in one pass over the activations.
"""

from __future__ import annotations

import dataclasses
import re
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


def coerce(value: str, default: Any, key: str, owner: str) -> Any:
    """Parse a spec value to the type of the field's default; a tuple is written with `+` between its items
    (`ks=1+5`), as commas already separate parameters and sweeps."""
    if isinstance(default, tuple):
        like = default[0] if default else ""
        return tuple(coerce(item.strip(), like, key, owner) for item in value.split("+") if item.strip())
    try:
        if isinstance(default, bool):
            if value.lower() not in {"true", "false", "1", "0"}:
                raise ValueError
            return value.lower() in {"true", "1"}
        if isinstance(default, int):
            return int(float(value)) if float(value).is_integer() else float(value)
        if isinstance(default, float):
            return float(value)
        if default is None:
            return None if value.lower() == "none" else int(value)
    except ValueError:
        raise BenchError(f"{owner}: {key}={value!r} is not a valid {type(default).__name__}") from None
    return value


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
        kwargs[key] = coerce(value, fields[key], key, name)
    return cls(**fixed, **kwargs)


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
