"""`neurons`: the standard basis of the hooked space, each direction and its negation (the paper's baseline).

Centred on the training mean like every other dense basis (PCA, ICA, random): codes are x - mean and a
reconstruction from some codes is mean + those coordinates. Uncentred, a coordinate left out of a top-k
reconstruction decoded as 0 rather than its typical value, which handicapped neurons at matched sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.dictionary import LinearDictionary
from bench.specs import positive
from methods.base import Method, ProgressFn, TrainingData


@dataclass
class Neurons(Method):
    max_tokens: int = positive(100_000)  # the mean is taken over a seeded subsample of this many training tokens (as `random`)

    name = "neurons"
    seeded = False  # the standard basis: only its centre, a mean over a subsample, depends on the seed
    description = "standard basis of the hooked space (identity), +/- each basis vector, centred on the training mean"

    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> LinearDictionary:
        eye = torch.eye(train.d_model)
        mean = train.kept_activations(min(train.n_kept, self.max_tokens), seed=self.seed).double().mean(0)
        return LinearDictionary.from_matrices(eye, eye, bias=mean.float(), signed=True)
