"""`random`: random unit directions, as many as the SAE dictionary, each with its negation.

Codes are projections on the random directions; reconstruction uses the pseudo-inverse, so with at least
d_model directions the full reconstruction is exact and only the basis is random.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.dictionary import LinearDictionary
from bench.specs import positive
from methods.base import Method, ProgressFn, TrainingData


@dataclass
class RandomDirections(Method):
    dict_ratio: float = positive(4.0)  # number of directions / d_model (the SAE's ratio by default)

    name = "random"
    description = "random unit directions (Gaussian, normalised), same count as the SAE dictionary"

    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> LinearDictionary:
        d = train.d_model
        m = max(1, round(self.dict_ratio * d))
        g = torch.Generator().manual_seed(self.seed)
        enc = torch.nn.functional.normalize(torch.randn(m, d, generator=g, dtype=torch.float64), dim=-1)
        dec = torch.linalg.pinv(enc.T)  # [m, d]: enc.T @ dec = I when m >= d
        mean = train.kept_activations(min(train.n_kept, 100_000), seed=self.seed).double().mean(0)
        return LinearDictionary.from_matrices(enc.float(), dec.float(), mean.float())
