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
    stats = ReconstructionStats(d_dict=3, n_units=1)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    codes = torch.tensor([[1.0, 0.0, 0.0], [2.0, 3.0, 0.0]])
    stats.update(x, x, codes, torch.tensor([0, 0]))
    m = stats.metrics(["doc-a"])
    assert m["l0"].value == 1.5  # (1 + 2) / 2 tokens
    assert m["dead_fraction"].value == pytest.approx(1 / 3)  # third code never fires
    assert not m["fvu"].higher_is_better and m["cosine"].higher_is_better
    # a union over the split, not a statistic of units: no interval, and the reason says so
    assert m["dead_fraction"].interval is None and "union" in m["dead_fraction"].interval_info.reason


def test_per_document_sums_by_hand():
    """Two documents, 1-d data: x = [0, 2 | 4], x^ = [1, 2 | 2]. Eval-set mean 2, so the documents' variances
    around it are 4 + 0 = 4 and 4, errors 1 + 0 = 1 and 4: FVU = (1 + 4) / (4 + 4) = 5/8, not the mean of the
    per-document ratios (1/4 + 4/4) / 2 nor a variance around each document's own mean."""
    stats = ReconstructionStats(d_dict=1, n_units=2)
    x = torch.tensor([[0.0], [2.0], [4.0]])
    x_hat = torch.tensor([[1.0], [2.0], [2.0]])
    stats.update(x, x_hat, torch.tensor([[1.0], [0.0], [1.0]]), torch.tensor([0, 0, 1]))
    assert stats.unit_variance().tolist() == [4.0, 4.0]
    m = stats.metrics(["a", "b"])
    assert m["fvu"].value == pytest.approx(5 / 8)
    assert m["mse"].value == pytest.approx(5 / 3)
    assert m["l0"].value == pytest.approx(2 / 3)
    ev = m["fvu"].evidence
    assert ev.unit == "document" and ev.ids == ["a", "b"]
    assert ev.columns["num"].tolist() == [1.0, 4.0] and ev.columns["den"].tolist() == [4.0, 4.0]
    # 2 documents: no interval, with the reason (never a degenerate [a, a])
    assert m["fvu"].interval is None and "too few" in m["fvu"].interval_info.reason


def _documents(n: int, n_docs: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).integers(0, n_docs, n))


def test_document_metrics_equal_the_pooled_formulas():
    """Ratios of per-document sums are exactly the pooled FVU / MSE / cosine / L0 computed over all tokens."""
    x = _data()
    doc = _documents(len(x), 40)
    ids = [f"doc-{i}" for i in range(40)]
    enc = torch.randn(24, x.shape[1], generator=torch.Generator().manual_seed(3))
    d = LinearDictionary.from_matrices(enc, enc * 0.1, bias=x.mean(0), signed=False)  # ReLU codes: L0 varies
    m = reconstruction_metrics(d, x, batch_size=333, unit_of=doc, ids=ids, seed=0)
    xd = x.double()
    codes = d.encode(x)
    x_hat = d.decode(codes).double()
    err = (xd - x_hat).pow(2)
    assert m["fvu"].value == pytest.approx(err.sum().item() / (xd - xd.mean(0)).pow(2).sum().item(), rel=1e-10)
    assert m["mse"].value == pytest.approx(err.mean().item(), rel=1e-10)
    cos = torch.nn.functional.cosine_similarity(xd, x_hat, dim=-1, eps=1e-12).mean().item()
    assert m["cosine"].value == pytest.approx(cos, rel=1e-10)
    assert m["l0"].value == pytest.approx((codes != 0).sum().item() / len(x), rel=1e-12)
    for name in ("fvu", "mse", "cosine", "l0"):
        info = m[name].interval_info
        assert info.unit == "document" and info.n == len(set(doc.tolist())) and info.method in ("BCa", "percentile")
        lo, hi = m[name].interval
        assert lo < m[name].value < hi


def test_two_dictionaries_on_the_same_data_are_paired_by_document():
    x = _data()
    doc = _documents(len(x), 12)
    ids = [f"doc-{i}" for i in range(12)]
    eye = torch.eye(x.shape[1])
    a = reconstruction_metrics(LinearDictionary.from_matrices(eye * 0.5, eye), x, unit_of=doc, ids=ids)
    b = reconstruction_metrics(PCA(n_components=3, seed=0).fit(ArraySplit(x)), x, unit_of=doc, ids=ids)
    for name in ("fvu", "mse", "cosine", "l0"):
        assert a[name].evidence.ids == b[name].evidence.ids == sorted(ids, key=lambda s: int(s.split("-")[1]))
    assert a["fvu"].value != b["fvu"].value


def test_without_documents_every_row_is_a_unit():
    x = _data(n=50)
    eye = torch.eye(x.shape[1])
    m = reconstruction_metrics(LinearDictionary.from_matrices(eye, eye * 0.9), x, unit="sample",
                               sources=("synthetic sample",), names=("fvu", "l0"))
    assert set(m) == {"fvu", "l0"}
    ev = m["fvu"].evidence
    assert ev.ids == [str(i) for i in range(50)] and ev.sources == ("synthetic sample",)
    assert m["fvu"].value == pytest.approx(0.01 * (x.double() ** 2).sum().item()
                                           / ((x.double() - x.double().mean(0)) ** 2).sum().item(), rel=1e-6)


def test_reconstruction_task_on_the_real_store(store):
    """Unit = document of the real eval split: ids are its document ids, coverage is recorded, and a seeded
    max_tokens subsample keeps each token's document."""
    from tasks.base import TaskContext
    from tasks.reconstruction import Reconstruction

    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: None, seed=0)
    task = Reconstruction()
    task.prepare(ctx)
    eye = torch.eye(store.d_model)
    out = task.evaluate(LinearDictionary.from_matrices(eye, eye * 0.8), ctx)
    all_ids = [d for d, _ in store.eval.documents]
    ev = out.metrics["fvu"].evidence
    assert ev.unit == "document" and set(ev.ids) <= set(all_ids)
    assert ev.n == len(set(store.eval.doc().tolist()))
    assert out.details["coverage"]["n_documents"] == ev.n and out.details["coverage"]["n_genres"] >= 2
    xd = store.eval.kept_activations().double()  # x^ = 0.8 x: err = 0.04 ||x||^2
    assert out.metrics["fvu"].value == pytest.approx(0.04 * xd.pow(2).sum().item()
                                                     / (xd - xd.mean(0)).pow(2).sum().item(), rel=1e-6)
    sub = Reconstruction(max_tokens=200)
    sub.prepare(ctx)
    again = Reconstruction(max_tokens=200)
    again.prepare(ctx)
    assert torch.equal(sub._x, again._x) and (sub._doc == again._doc).all()  # seeded
    assert sub._x.shape[0] == 200 and len(sub._doc) == 200
    out = sub.evaluate(LinearDictionary.from_matrices(eye, eye), ctx)
    assert out.metrics["fvu"].value == 0.0
    assert out.details["n_tokens"] == 200 and out.details["coverage"]["n_documents"] >= 2
