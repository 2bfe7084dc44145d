"""Metric formulas against cases whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

from bench.dictionary import LinearDictionary
from bench.store import ArraySplit
from methods.pca import PCA
from tasks.reconstruction import ReconstructionStats, reconstruction_metrics


def _data(n: int = 2000, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) * torch.linspace(0.1, 3.0, d)
    return torch.randn(n, d, generator=g) @ mix + 5.0


def test_predicting_the_mean_gives_fvu_one():
    x = _data()
    mean = x.double().mean(0).float()
    # a dictionary whose reconstruction is the mean everywhere: zero encoder, bias = mean
    d = LinearDictionary.from_matrices(torch.zeros(4, x.shape[1]), torch.zeros(4, x.shape[1]), mean)
    m = reconstruction_metrics(d, x)
    assert m["fvu"].value == pytest.approx(1.0, abs=1e-6)
    assert m["l0"].value == 0.0
    assert m["dead_fraction"].value == 1.0


def test_identity_gives_fvu_zero():
    x = _data()
    eye = torch.eye(x.shape[1])
    m = reconstruction_metrics(LinearDictionary.from_matrices(eye, eye), x)
    assert m["fvu"].value == 0.0
    assert m["mse"].value == 0.0
    assert m["cosine"].value == pytest.approx(1.0, abs=1e-12)


def test_fvu_is_independent_of_batch_size():
    x = _data()
    eye = torch.eye(x.shape[1])
    d = LinearDictionary.from_matrices(eye * 0.5, eye)
    a = reconstruction_metrics(d, x, batch_size=7)["fvu"].value
    b = reconstruction_metrics(d, x, batch_size=10_000)["fvu"].value
    assert a == pytest.approx(b, rel=1e-12)
    assert a == pytest.approx(((0.5 * x.double()) ** 2).sum().item() / ((x.double() - x.double().mean(0)) ** 2).sum().item(), rel=1e-9)


def test_pca_with_all_components_reconstructs_exactly():
    x = _data()
    d = PCA(seed=0).fit(ArraySplit(x))
    m = reconstruction_metrics(d, x)
    assert m["fvu"].value < 1e-10


@pytest.mark.parametrize("k", [1, 4, 10])
def test_pca_fvu_matches_sklearn_explained_variance(k):
    x = _data()
    d = PCA(n_components=k, seed=0).fit(ArraySplit(x))
    ours = reconstruction_metrics(d, x)["fvu"].value
    sk = SkPCA(n_components=k, svd_solver="full").fit(x.double().numpy())
    assert ours == pytest.approx(1.0 - float(np.sum(sk.explained_variance_ratio_)), abs=1e-5)


def test_l0_and_dead_fraction_by_hand():
    stats = ReconstructionStats(d_dict=3)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    codes = torch.tensor([[1.0, 0.0, 0.0], [2.0, 3.0, 0.0]])
    stats.update(x, x, codes)
    m = stats.metrics()
    assert m["l0"].value == 1.5  # (1 + 2) / 2 tokens
    assert m["dead_fraction"].value == pytest.approx(1 / 3)  # third code never fires
    assert not m["fvu"].higher_is_better and m["cosine"].higher_is_better
