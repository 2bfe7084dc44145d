"""`ica`: independent components (scikit-learn FastICA), each with its negation, as in the paper's baselines."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from sklearn.decomposition import FastICA
from sklearn.exceptions import ConvergenceWarning

from bench.dictionary import LinearDictionary
from bench.specs import positive
from methods.base import Method, ProgressFn, TrainingData


@dataclass
class ICA(Method):
    n_components: int | None = positive(None)  # None: d_model components
    # FastICA is the slowest baseline (~0.3 s per iteration for 576 components on 10k tokens, 2 cores) and
    # rarely converges on residual-stream data within a CPU budget: `fit_info_` records whether it did.
    max_tokens: int = positive(10_000)
    max_iter: int = positive(100)
    tol: float = positive(1e-3)

    name = "ica"
    description = "independent components (scikit-learn FastICA), +/- each component"

    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> LinearDictionary:
        x = train.kept_activations(self.max_tokens, seed=self.seed).double().numpy()
        ica = FastICA(
            n_components=self.n_components,
            whiten="unit-variance",
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ica.fit(x)
        self.fit_info_ = {"n_iter": int(ica.n_iter_), "converged": bool(ica.n_iter_ < self.max_iter),
                          "n_tokens": int(x.shape[0])}
        unmixing = torch.from_numpy(ica.components_).float()  # [k, d]: sources = (x - mean) @ unmixing.T
        mixing = torch.from_numpy(ica.mixing_.T).float()  # [k, d]: x = mean + sources @ mixing
        return LinearDictionary.from_matrices(unmixing, mixing, torch.from_numpy(ica.mean_).float())
