"""loss_recovered on the real model: splicing the clean activation gives 1 and KL 0; zero ablation gives 0."""

from __future__ import annotations

import pytest
import torch

from bench.dictionary import LinearDictionary
from tasks.base import TaskContext
from tasks.loss_recovered import LossRecovered


@pytest.fixture(scope="module")
def prepared(store, model):
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: model)
    task = LossRecovered(n_contexts=4, batch_size=4)
    task.prepare(ctx)
    return task, ctx


def test_ablations_hurt(prepared):
    task, _ = prepared
    assert task.ce_zero > task.ce_clean + 0.5
    assert task.ce_mean > task.ce_clean


def test_clean_splice_recovers_everything(prepared):
    task, ctx = prepared
    eye = torch.eye(ctx.store.d_model)
    out = task.evaluate(LinearDictionary.from_matrices(eye, eye), ctx)
    assert out.metrics["loss_recovered"].value == pytest.approx(1.0, abs=1e-6)
    assert out.metrics["loss_recovered_mean"].value == pytest.approx(1.0, abs=1e-6)
    assert out.metrics["kl"].value == pytest.approx(0.0, abs=1e-6)
    assert out.metrics["kl_share"].value == pytest.approx(0.0, abs=1e-6)


def test_zero_splice_recovers_nothing(prepared):
    task, ctx = prepared
    zero = torch.zeros(1, ctx.store.d_model)
    out = task.evaluate(LinearDictionary.from_matrices(zero, zero), ctx)
    assert out.metrics["loss_recovered"].value == pytest.approx(0.0, abs=1e-9)
    assert out.metrics["kl"].value > 0.1
    assert out.metrics["kl_share"].value == pytest.approx(1.0, abs=1e-6)


def test_mean_splice_recovers_nothing_against_mean_ablation(prepared):
    task, ctx = prepared
    mean = ctx.store.train.kept_activations(min(ctx.store.train.n_kept, 100_000), seed=ctx.seed).mean(0)
    zero = torch.zeros(1, ctx.store.d_model)
    out = task.evaluate(LinearDictionary.from_matrices(zero, zero, bias=mean), ctx)
    assert out.metrics["loss_recovered_mean"].value == pytest.approx(0.0, abs=1e-6)
