"""Edits that try to remove a concept from activations, all of the form `[n, d] -> [n, d]`.

- `FeatureAblation`: set k of a dictionary's features to fixed values (their mean on the concept's training
  tokens), keeping the reconstruction error: x' = x + decode(c') - decode(c).
- `leace`: LEACE (Belrose et al. 2023, package `concept-erasure`), the least-squares linear eraser that makes the
  concept linearly unreadable on the data it was fitted on: the bound for what a linear edit can do.
- `MeanDifference`: project out the direction between the two class means (DiffMean erasure: AxBench's DiffMean
  direction, Wu et al. 2025); afterwards both classes' means project to the same value on it.
"""

from __future__ import annotations

from typing import Callable

import torch

from bench.dictionary import Dictionary
from bench.errors import BenchError

Edit = Callable[[torch.Tensor], torch.Tensor]


class FeatureAblation:
    """features: `[k]` indices; values: `[k]` the codes they are set to."""

    def __init__(self, dictionary: Dictionary, features: torch.Tensor, values: torch.Tensor) -> None:
        self.dictionary, self.features, self.values = dictionary, features.long(), values

    def set_codes(self, codes: torch.Tensor) -> torch.Tensor:
        out = codes.clone()
        out[..., self.features] = self.values.to(codes)
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        codes = self.dictionary.encode(x)
        return x + self.dictionary.decode(self.set_codes(codes)) - self.dictionary.decode(codes)

    def pooled(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The edit of mean-pooled examples from their mean codes: x `[n, d]`, codes `[n, d_dict]` (exact for an
        affine decoder, which `check_affine` verifies)."""
        return x + self.dictionary.decode(self.set_codes(codes)) - self.dictionary.decode(codes)


def check_affine(dictionary: Dictionary, codes: torch.Tensor) -> None:
    """Pooled edits rely on decode being affine in the codes (x̂ = b + c W, true of every built-in dictionary)."""
    a, b = codes[:1], codes[-1:]
    mid, ends = dictionary.decode(0.5 * (a + b)), 0.5 * (dictionary.decode(a) + dictionary.decode(b))
    if not torch.allclose(mid, ends, rtol=1e-3, atol=1e-3 * float(ends.abs().max()) + 1e-6):
        raise BenchError("concept_erasure needs a dictionary whose decode is affine in the codes (x̂ = b + c W)")


class MeanDifference:
    """x' = x - ((x - mu) . u) u, u the unit difference of the class means of x `[n, d]` with labels `[n]`."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        x = x.double()
        diff = x[labels].mean(0) - x[~labels].mean(0)
        self.u = (diff / diff.norm()).float()
        self.mu = x.mean(0).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x - ((x - self.mu.to(x)) @ self.u.to(x))[..., None] * self.u.to(x)


def leace(x: torch.Tensor, labels: torch.Tensor) -> Edit:
    """LEACE fitted on x `[n, d]` with binary labels `[n]`."""
    from concept_erasure import LeaceEraser

    eraser = LeaceEraser.fit(x.double(), labels.double()[:, None])
    return lambda v: eraser(v.double()).to(v.dtype)
