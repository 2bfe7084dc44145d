"""ica (Picard-O): recovers independent sources known by construction, converges, reconstructs, is seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from bench.errors import BenchError
from bench.store import ArraySplit
from methods.ica import ICA


def _mixed_laplace(n: int = 6000, d: int = 10, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Independent Laplace sources (super-Gaussian, like sparse features) mixed by a random invertible matrix,
    plus an offset: x = offset + s @ mixing. Returns x [n, d] and the true mixing directions [d, d]."""
    rng = np.random.default_rng(seed)
    sources = rng.laplace(size=(n, d))
    mixing = rng.normal(size=(d, d))  # rows: each source's direction in x-space
    assert np.linalg.cond(mixing) < 100  # well-conditioned, hence invertible
    x = 3.0 + sources @ mixing
    return torch.from_numpy(x), mixing


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_recovers_known_mixing_up_to_permutation_and_sign():
    x, true_mixing = _mixed_laplace()
    method = ICA(tol=1e-6, max_iter=500)
    d = method.fit(ArraySplit(x))
    info = method.fit_info_
    assert info["converged"] is True and info["gradient_norm"] < 1e-6 and 0 < info["n_iter"] < 500
    assert (info["n_tokens"], info["n_components"], info["n_sub_gaussian"], info["tol"]) == (6000, 10, 0, 1e-6)
    # |cos| between every fitted and every true direction; a Hungarian match pairs them one to one
    cos = np.abs(_unit(d.decoder.double().numpy()) @ _unit(true_mixing).T)
    rows, cols = linear_sum_assignment(-cos)
    assert cos[rows, cols].min() > 0.98, cos[rows, cols]
    # sources = (x - mean) @ unmixing.T are the true sources, up to permutation, sign and scale
    fitted = d.project(x.float()).double().numpy()
    true_sources = (x.numpy() - 3.0) @ np.linalg.inv(true_mixing)
    corr = np.abs(np.corrcoef(fitted.T, true_sources.T)[:10, 10:])
    assert corr[rows, cols].min() > 0.98
    assert np.allclose(fitted.std(axis=0), 1.0, atol=0.01)  # unit-variance sources
    assert (np.mean(fitted**3, axis=0) > 0).all()  # each source's heavy tail on its positive side


def test_all_components_reconstruct_exactly():
    x, _ = _mixed_laplace(n=3000, d=12, seed=1)
    d = ICA(max_iter=300).fit(ArraySplit(x))
    x = x.float()
    torch.testing.assert_close(d(x), x, atol=1e-4, rtol=1e-5)  # float rounding only
    torch.testing.assert_close(d.decode(d.encode(x)), x, atol=1e-4, rtol=1e-5)
    assert d.d_dict == 24  # signed pairs: each direction and its negation


def test_same_seed_identical_other_seed_differs():
    x, _ = _mixed_laplace(n=4000, d=8, seed=2)
    train = ArraySplit(x)
    fits = [ICA(seed=s, max_tokens=3000, max_iter=50).fit(train) for s in (5, 5, 6)]
    for name, tensor in fits[0].state_dict().items():
        assert torch.equal(tensor, fits[1].state_dict()[name]), name
    assert not torch.equal(fits[0].encoder, fits[2].encoder)  # another subsample and initial rotation


def test_unconverged_fit_says_so():
    x, _ = _mixed_laplace(n=3000, d=12, seed=3)
    method = ICA(max_iter=2, tol=1e-9)
    method.fit(ArraySplit(x))
    info = method.fit_info_
    assert info["converged"] is False and info["n_iter"] == 2 and info["gradient_norm"] > 1e-9


def test_fewer_components_keep_the_top_principal_subspace():
    x, _ = _mixed_laplace(n=3000, d=10, seed=4)
    d = ICA(n_components=4).fit(ArraySplit(x))
    assert (d.n_atoms, d.d_in) == (4, 10)
    # the unmixed sources are white: identity covariance on the training data
    z = d.project(x.float()).double()
    torch.testing.assert_close(torch.cov(z.T), torch.eye(4, dtype=torch.float64), atol=1e-3, rtol=0)


def test_degenerate_data_is_a_one_line_error():
    x = torch.randn(500, 6, generator=torch.Generator().manual_seed(0))
    x = torch.cat([x, x[:, :2]], dim=1)  # 8 dimensions spanning 6
    with pytest.raises(BenchError, match="span fewer than n_components=8"):
        ICA().fit(ArraySplit(x))
    with pytest.raises(BenchError, match="exceeds the activations' dimension 8"):
        ICA(n_components=9).fit(ArraySplit(x))
