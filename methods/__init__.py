"""Registered methods. Adding one is a module defining a `Method` dataclass plus one line in `REGISTRY`.

A method is named on the command line by a spec: `name` or `name[key=value,...]`, e.g.
`sae-relu[l1_coeff=1e-3,tied=true]`; the keys are the method's dataclass fields. `key=a|b|c` sweeps: it expands
to one spec per value (several swept keys give every combination).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from bench.errors import BenchError
from methods.base import Method
from methods.ica import ICA
from methods.neurons import Neurons
from methods.pca import PCA
from methods.random_dirs import RandomDirections
from methods.sae_relu import SAEReLU

REGISTRY: dict[str, type[Method]] = {
    cls.name: cls for cls in (Neurons, PCA, ICA, RandomDirections, SAEReLU)
}

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.:-]+)(\[(?P<params>[^\]]*)\])?$")
_RUNNER_FIELDS = {"seed", "device"}


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """`"sae-relu[l1_coeff=1e-3]"` -> `("sae-relu", {"l1_coeff": "1e-3"})`."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise BenchError(f"cannot parse method spec {spec!r}: write name or name[key=value,...]")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in (m.group("params") or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise BenchError(f"method spec {spec!r}: parameter {item!r} needs the form key=value")
        params[key.strip()] = value.strip()
    return m.group("name"), params


def expand_spec(spec: str) -> list[str]:
    """`"sae-relu[l1_coeff=1e-3|3e-3,tied=true]"` -> one spec per combination of swept values."""
    name, params = parse_spec(spec)
    combos: list[dict[str, str]] = [{}]
    for key, value in params.items():
        combos = [{**c, key: v.strip()} for c in combos for v in value.split("|")]
    return [name + ("[" + ",".join(f"{k}={v}" for k, v in c.items()) + "]" if c else "") for c in combos]


def _coerce(value: str, default: Any, field: str, method: str) -> Any:
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
        raise BenchError(f"{method}: {field}={value!r} is not a valid {type(default).__name__}") from None
    return value


def method_fields(cls: type[Method]) -> dict[str, Any]:
    """Hyper-parameters a user may set, with their defaults (seed and device come from the runner)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.name not in _RUNNER_FIELDS}


def build_method(spec: str, overrides: dict[str, Any] | None = None, seed: int = 0, device: str = "cpu") -> Method:
    """Instantiate a method from its spec. `overrides` (from a preset) come first, the spec's params win."""
    name, params = parse_spec(spec)
    if name not in REGISTRY:
        raise BenchError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)} (see `python -m bench list`)")
    cls = REGISTRY[name]
    fields = method_fields(cls)
    kwargs: dict[str, Any] = {k: v for k, v in (overrides or {}).items() if k in fields}
    for key, value in params.items():
        if key not in fields:
            raise BenchError(f"{name} has no parameter {key!r}; it takes {', '.join(fields) or 'none'}")
        kwargs[key] = _coerce(value, fields[key], key, name)
    return cls(seed=seed, device=device, **kwargs)


def canonical_spec(method: Method, defaults: dict[str, Any] | None = None) -> str:
    """Name plus the parameters that differ from the preset's defaults: a stable label for results."""
    base = dict(method_fields(type(method)))
    base.update({k: v for k, v in (defaults or {}).items() if k in base})
    diff = {k: getattr(method, k) for k in base if getattr(method, k) != base[k]}
    if not diff:
        return method.name
    return method.name + "[" + ",".join(f"{k}={v}" for k, v in sorted(diff.items())) + "]"
