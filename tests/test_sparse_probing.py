"""sparse_probing: feature selection and probe scoring on cases with known answers, then the task on real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.dictionary import LinearDictionary
from tasks.base import TaskContext
from tasks.sparse_probing import SparseProbing, _probe_auroc, top_features


def test_top_features_finds_the_separating_feature():
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2 == 0
    codes = rng.normal(size=(200, 6))
    codes[:, 4] += 3.0 * y  # feature 4 separates the classes, feature 1 a little
    codes[:, 1] += 0.5 * y
    assert top_features(codes, y, 2).tolist() == [4, 1]


def test_probe_auroc_is_one_on_separable_data_and_half_on_noise():
    rng = np.random.default_rng(0)
    y = np.arange(400) % 2 == 0
    x = rng.normal(size=(400, 3)) + 4.0 * y[:, None]
    assert _probe_auroc(x[:200], y[:200], x[200:], y[200:], 1.0) == 1.0
    noise = rng.normal(size=(400, 3))
    assert abs(_probe_auroc(noise[:200], y[:200], noise[200:], y[200:], 1.0) - 0.5) < 0.15


def test_on_real_activations_all_codes_match_the_dense_probe(store):
    """With every code of the identity dictionary the probe sees what the dense probe sees (x = c+ - c-)."""
    task = SparseProbing(ks=(1, 2 * store.d_model), n_train_contexts=48, n_eval_contexts=16, min_examples=2)
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: None)
    task.prepare(ctx)
    assert len(task._genres) >= 2
    eye = torch.eye(store.d_model)
    out = task.evaluate(LinearDictionary.from_matrices(eye, eye), ctx)
    m = {k: v.value for k, v in out.metrics.items()}
    assert 0.0 <= m["auroc_k1"] <= 1.0
    assert m[f"auroc_k{2 * store.d_model}"] == pytest.approx(m["dense_auroc"], abs=0.1)
