"""Registered methods. Adding one is a module defining a `Method` dataclass plus one line in `REGISTRY`
(or an entry point in the group `decompbench.methods` of another package: see `bench.plugins`).

A method is named on the command line by a spec (see `bench.specs`), e.g. `sae-relu[l1_coeff=1e-3,tied=true]`.
"""

from __future__ import annotations

from typing import Any

from bench.plugins import BUILTIN, load_plugins
from bench.specs import build, canonical_label, expand_spec, parse_spec, settable_fields
from methods.base import Method
from methods.ica import ICA
from methods.kmeans import KMeans
from methods.neurons import Neurons
from methods.pca import PCA
from methods.pretrained import Pretrained
from methods.random_dirs import RandomDirections
from methods.sae_batchtopk import SAEBatchTopK
from methods.sae_gated import SAEGated
from methods.sae_jumprelu import SAEJumpReLU
from methods.sae_matryoshka import SAEMatryoshka
from methods.sae_relu import SAEReLU
from methods.sae_topk import SAETopK

REGISTRY: dict[str, type[Method]] = {
    cls.name: cls for cls in (Neurons, PCA, ICA, RandomDirections, SAEReLU, SAETopK, SAEBatchTopK, SAEJumpReLU,
                              SAEGated, SAEMatryoshka, KMeans, Pretrained)
}
ORIGINS: dict[str, str] = dict.fromkeys(REGISTRY, BUILTIN)  # name -> package that provides it
load_plugins("decompbench.methods", Method, REGISTRY, ORIGINS)

_RUNNER_FIELDS = {"seed", "device"}


def method_fields(cls: type[Method]) -> dict[str, Any]:
    """Hyper-parameters a user may set, with their defaults (seed and device come from the runner)."""
    return settable_fields(cls, _RUNNER_FIELDS)


def build_method(spec: str, overrides: dict[str, Any] | None = None, seed: int = 0, device: str = "cpu") -> Method:
    """Instantiate a method from its spec. `overrides` (from a preset) come first, the spec's params win."""
    return build(spec, REGISTRY, "method", overrides, _RUNNER_FIELDS, seed=seed, device=device)


def canonical_spec(method: Method, defaults: dict[str, Any] | None = None) -> str:
    """Name plus the parameters that differ from the preset's defaults: a stable label for results."""
    return canonical_label(method, defaults, _RUNNER_FIELDS)


__all__ = ["ORIGINS", "REGISTRY", "build_method", "canonical_spec", "expand_spec", "method_fields", "parse_spec"]
