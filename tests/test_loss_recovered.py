"""loss_recovered on the real model: splicing the clean activation gives 1 and KL 0; zero ablation gives 0; the
per-document evidence reproduces the pooled formulas; contexts are spread over documents and genres."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.dictionary import LinearDictionary
from tasks.base import TaskContext
from tasks.loss_recovered import LossRecovered
from tasks.sampling import split_genres, spread_contexts

N_CONTEXTS = 6  # of the test store's eval split: 16 contexts, at most 2 per document (6 documents give intervals)


@pytest.fixture(scope="module")
def prepared(store, model):
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: model, seed=0)
    task = LossRecovered(n_contexts=N_CONTEXTS, batch_size=4)
    task.prepare(ctx)
    return task, ctx


def _half(ctx) -> LinearDictionary:
    eye = torch.eye(ctx.store.d_model)
    return LinearDictionary.from_matrices(eye, eye * 0.5)


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


def test_contexts_are_spread_over_documents_and_genres(prepared):
    task, ctx = prepared
    split = ctx.store.eval
    doc = split.doc()
    cov = task._coverage
    assert cov["n_contexts"] == N_CONTEXTS
    assert cov["n_documents"] == min(N_CONTEXTS, len(set(doc.tolist())))  # one context per document first
    assert cov["n_genres"] == len({split.documents[d][1] for d in doc[task._idx].tolist()}) >= 2
    assert (spread_contexts(doc, split_genres(split), N_CONTEXTS, ctx.seed, "loss_recovered") == task._idx).all()
    assert not (spread_contexts(doc, split_genres(split), N_CONTEXTS, ctx.seed + 1, "loss_recovered")
                == task._idx).all()  # seeded: another seed, other contexts


def test_per_document_evidence_reproduces_the_pooled_formulas(prepared, model):
    """The Metric.of values equal the old computation: means over all predicted positions of the picked contexts,
    recomputed here independently (one forward pass per context, F.cross_entropy)."""
    task, ctx = prepared
    store = ctx.store
    dictionary = _half(ctx)
    tokens = torch.from_numpy(store.eval.tokens()[task._idx]).long()
    ce = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
    kl, n = 0.0, 0
    for row in tokens.split(1):
        clean = F.log_softmax(model.logits(row).float(), dim=-1)[:, :-1]
        for name, replace in (("spliced", lambda a: dictionary(a)), ("zero", torch.zeros_like)):
            def edit(act, replace=replace, row=row):
                keep = store.exclusion.mask(row, act, model.special_ids, store.reference_norm)
                out = act.clone()
                out[keep] = replace(act[keep]).to(act.dtype)
                return out

            logp = F.log_softmax(model.logits(row, store.hook, edit).float(), dim=-1)[:, :-1]
            ce[name] += F.cross_entropy(logp[0], row[0, 1:], reduction="sum").item()
            if name == "spliced":
                kl += F.kl_div(logp, clean, log_target=True, reduction="sum").item()
        ce["clean"] += F.cross_entropy(clean[0], row[0, 1:], reduction="sum").item()
        n += row.shape[1] - 1
    old = {k: v / n for k, v in ce.items()}
    out = task.evaluate(dictionary, ctx)
    m = out.metrics
    assert out.details["n_predictions"] == n
    assert out.details["ce_clean"] == pytest.approx(old["clean"], rel=1e-5)
    assert out.details["ce_zero"] == pytest.approx(old["zero"], rel=1e-5)
    assert m["ce_spliced"].value == pytest.approx(old["spliced"], rel=1e-5)
    assert m["ce_increase"].value == pytest.approx(old["spliced"] - old["clean"], rel=1e-4, abs=1e-6)
    assert m["loss_recovered"].value == pytest.approx(
        (old["zero"] - old["spliced"]) / (old["zero"] - old["clean"]), rel=1e-4)
    assert m["kl"].value == pytest.approx(kl / n, rel=1e-4)
    assert m["kl_share"].value == pytest.approx(kl / n / out.details["kl_zero"], rel=1e-4)
    # the evidence: one row per document, ids are the documents' ids
    ids = [store.eval.documents[d][0] for d in sorted(set(store.eval.doc()[task._idx].tolist()))]
    for name, metric in m.items():
        assert metric.evidence.unit == "document" and metric.evidence.ids == ids, name
        assert metric.evidence.value() == pytest.approx(metric.value, rel=1e-12)
    # 6 documents: an interval around the value
    lo, hi = m["loss_recovered"].interval
    assert lo <= m["loss_recovered"].value <= hi and hi > lo
    # per genre: the documents of each genre add up to the whole
    assert sum(g["documents"] for g in out.details["per_genre"].values()) == len(ids)


def test_two_dictionaries_are_paired_by_document(prepared):
    task, ctx = prepared
    eye = torch.eye(ctx.store.d_model)
    a = task.evaluate(_half(ctx), ctx).metrics
    b = task.evaluate(LinearDictionary.from_matrices(eye, eye * 0.9), ctx).metrics
    for name in a:
        assert a[name].evidence.ids == b[name].evidence.ids
    assert a["kl"].value > b["kl"].value


def test_per_document_sums_by_hand():
    task = LossRecovered()
    task._docs, task._unit = np.array([3, 7]), np.array([0, 1, 0])  # contexts 0 and 2 are document 3's
    assert task._per_doc(np.array([1.0, 2.0, 3.0])).tolist() == [4.0, 2.0]
