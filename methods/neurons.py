"""`neurons`: the standard basis of the hooked space, each direction and its negation (the paper's baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.dictionary import LinearDictionary
from methods.base import Method, ProgressFn, TrainingData


@dataclass
class Neurons(Method):
    name = "neurons"
    description = "standard basis of the hooked space (identity), +/- each basis vector"

    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> LinearDictionary:
        eye = torch.eye(train.d_model)
        return LinearDictionary.from_matrices(eye, eye, signed=True)
