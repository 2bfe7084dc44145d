"""`pca`: principal components of the training activations (scikit-learn), each with its negation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.decomposition import PCA as SkPCA

from bench.dictionary import LinearDictionary
from bench.specs import positive
from methods.base import Method, ProgressFn, TrainingData


@dataclass
class PCA(Method):
    n_components: int | None = positive(None)  # None: all d_model components (exact reconstruction)
    max_tokens: int = positive(200_000)  # fit on a seeded subsample of this many training tokens

    name = "pca"
    description = "principal components (scikit-learn PCA), +/- each component"

    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> LinearDictionary:
        x = train.kept_activations(self.max_tokens, seed=self.seed).double().numpy()
        pca = SkPCA(n_components=self.n_components, svd_solver="full").fit(x)
        components = torch.from_numpy(pca.components_).float()  # [k, d], orthonormal rows
        return LinearDictionary.from_matrices(components, components, torch.from_numpy(pca.mean_).float())
