"""sparse_probing: feature selection and probe scoring on cases with known answers, then the task on real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.dictionary import LinearDictionary
from bench.errors import BenchError
from tasks.base import TaskContext
from tasks.ioi.dataset import NAMES, repeated_names
from tasks.probing import probe, top_features
from tasks.prompts import single_tokens
from tasks.sparse_probing import SparseProbing, _pool


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
    assert probe(x[:200], y[:200], x[200:], y[200:], 1.0) == (1.0, 1.0)
    noise = rng.normal(size=(400, 3))
    auroc, accuracy = probe(noise[:200], y[:200], noise[200:], y[200:], 1.0)
    assert abs(auroc - 0.5) < 0.15 and abs(accuracy - 0.5) < 0.15


def test_pool_means_each_examples_tokens():
    examples = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[5.0, 6.0]])]
    assert _pool(examples, lambda x: 2 * x).tolist() == [[4.0, 6.0], [10.0, 12.0]]


def test_repeated_names_differ_only_in_whether_the_name_was_said_before(model):
    bos = model.tokenizer.bos_token_id
    rn = repeated_names(12, model.tokenize, seed=3, bos=bos, pad=0)
    ids = set(single_tokens(NAMES, model.tokenize).values())
    assert rn.label.tolist() == [False, True] * 6
    for row, n, pos, label in zip(rn.tokens, rn.length, rn.position, rn.label, strict=True):
        name = int(row[pos])
        assert name in ids and pos < n
        said_before = name in row[:pos].tolist()
        assert said_before == bool(label)
        assert sum(int(t) in ids for t in row[:pos]) == 2  # two names in the first clause on both sides
    # the same template puts the name at the same place on both sides of a pair
    assert (rn.position[0::2] == rn.position[1::2]).all()


def test_unknown_concept_is_a_one_line_error(store):
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: None)
    with pytest.raises(BenchError, match="unknown concept"):
        SparseProbing(concepts=("genre", "colour")).prepare(ctx)


def test_on_real_activations_all_codes_match_the_dense_probe(store, model):
    """With every code of the identity dictionary the probe sees what the dense probe sees (x = c+ - c-), for every
    concept; and the real model knows each token-level concept (dense AUROC well above chance)."""
    task = SparseProbing(ks=(1, 2 * store.d_model), n_train_contexts=48, n_eval_contexts=16, min_examples=2,
                         n_train_prompts=160, n_test_prompts=80)
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: model)
    task.prepare(ctx)
    assert set(task._sets) == {"genre", "pronoun", "number", "repeated_name"}
    assert len(task._sets["genre"].problems) >= 2
    eye = torch.eye(store.d_model)
    out = task.evaluate(LinearDictionary.from_matrices(eye, eye), ctx)
    m = {k: v.value for k, v in out.metrics.items()}
    assert 0.0 <= m["auroc_k1"] <= 1.0 and 0.0 <= m["accuracy_k1"] <= 1.0
    for concept in task._sets:
        assert m[f"{concept}_auroc_k{2 * store.d_model}"] == pytest.approx(m[f"{concept}_dense_auroc"], abs=0.1)
    for concept in ("pronoun", "number", "repeated_name"):
        assert m[f"{concept}_dense_auroc"] > 0.75, concept
