"""ioi_patching: the prompts, the patching algebra on hand-made cases, and the endpoints on the real model for every
registered method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import methods
from bench.dictionary import LinearDictionary
from bench.errors import BenchError
from tasks.base import TaskContext
from tasks.ioi import IOIPatching
from tasks.ioi.dataset import TEMPLATES, fill, make_dataset
from tasks.ioi.patching import Curves, Patcher, Point, kl_auc, kl_auc_weights, smallest_k
from tests.fast_methods import FAST, IN_ALL

# --- prompts ------------------------------------------------------------------------------------------------


def test_fill_orders_the_names():
    t = "When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to"
    assert fill(t, "ABBA", "Mary", "John", "store", "drink") == "When Mary and John went to the store, John gave a drink to"
    assert fill(t, "BABA", "Mary", "John", "store", "drink") == "When John and Mary went to the store, John gave a drink to"


def test_dataset_on_the_real_tokenizer(model):
    ds = make_dataset(20, model.tokenize, seed=3)
    assert len(ds) == 20
    assert ds.order.count("ABBA") == ds.order.count("BABA") == 10
    pairs = list(zip(ds.order, ds.template, strict=True))
    for t in range(len(TEMPLATES)):  # each template appears in both orders equally often
        assert pairs.count(("ABBA", t)) == pairs.count(("BABA", t))
    for name in ds.names:  # every name is one token after a space, on this tokenizer
        assert len(model.tokenize(" " + name)) == 1
    rows = torch.arange(len(ds))
    assert (ds.clean[rows, ds.pos_io] == ds.io).all() and (ds.counterfactual[rows, ds.pos_io] == ds.c).all()
    assert (ds.clean[rows, ds.pos_s1] == ds.s).all() and (ds.clean[rows, ds.pos_s2] == ds.s).all()
    differ = ds.clean != ds.counterfactual
    assert (differ.sum(1) == 1).all() and differ[rows, ds.pos_io].all()
    for i, order in enumerate(ds.order):
        assert (ds.pos_io[i] < ds.pos_s1[i]) == (order == "ABBA") and ds.pos_s1[i] < ds.pos_s2[i]
        assert model.tokenizer.decode(ds.clean[i, : ds.length[i]]) == ds.texts[i]
        assert len({int(ds.io[i]), int(ds.s[i]), int(ds.c[i])}) == 3
    again = make_dataset(20, model.tokenize, seed=3)
    assert again.texts == ds.texts and torch.equal(again.counterfactual, ds.counterfactual)
    assert make_dataset(20, model.tokenize, seed=4).texts != ds.texts


def test_dataset_refuses_what_it_cannot_balance_or_tokenize(model):
    with pytest.raises(BenchError, match="even number"):
        make_dataset(7, model.tokenize, seed=0)
    by_character = lambda text: [ord(ch) for ch in text]  # noqa: E731 - no name is one token
    with pytest.raises(BenchError, match="single tokens"):
        make_dataset(4, by_character, seed=0)


# --- patching algebra on hand-made cases --------------------------------------------------------------------


def _pair():
    """N=1 prompt, T=3 positions, d=2; position 0 is not editable (a sink)."""
    x_base = torch.tensor([[[5.0, 5.0], [1.0, 0.0], [0.0, 1.0]]])
    x_target = torch.tensor([[[5.0, 5.0], [3.0, 0.0], [0.0, -2.0]]])
    return x_base, x_target, torch.tensor([[False, True, True]])


def test_patching_moves_features_and_keeps_the_error():
    x_base, x_target, editable = _pair()
    # One atom along dimension 0 only: dimension 1 is all error.
    d = LinearDictionary.from_matrices(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), signed=False)
    p = Patcher(d, x_base, x_target, editable)
    assert p.differs.tolist() == [True]
    moved = p.activation(torch.tensor([True]))
    # dimension 0 takes the target's values, dimension 1 keeps the base run's (error kept)
    assert torch.equal(moved, torch.tensor([[[5.0, 5.0], [3.0, 0.0], [0.0, 1.0]]]))
    assert torch.equal(p.activation(torch.tensor([False])), x_base)
    assert torch.allclose(p.activation(torch.tensor([True]), move_error=True), x_target)
    # the error node alone moves what the dictionary does not represent
    assert torch.equal(p.activation(torch.tensor([False]), move_error=True), torch.tensor([[[5.0, 5.0], [1.0, 0.0], [0.0, -2.0]]]))


def test_signed_pairs_move_separately():
    x_base, x_target, editable = _pair()
    d = LinearDictionary.from_matrices(torch.eye(2), torch.eye(2), signed=True)  # codes relu(x), relu(-x)
    p = Patcher(d, x_base, x_target, editable)
    # dim 1 at position 2 goes from +1 to -2: its positive code (1) and negative code (3) both change
    assert p.differs.tolist() == [True, True, False, True]
    only_positive = p.activation(p.mask([1]))
    assert only_positive[0, 2].tolist() == [0.0, 0.0]
    assert torch.allclose(p.activation(p.mask([0, 1, 3])), x_target)


def test_attribution_is_gradient_times_code_difference():
    x_base, x_target, editable = _pair()
    w = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    d = LinearDictionary.from_matrices(w, w, signed=False)  # decode(c) = c @ w
    grad = torch.tensor([[[9.0, 9.0], [2.0, 1.0], [1.0, 3.0]]])
    p = Patcher(d, x_base, x_target, editable)
    c_b, c_t = torch.relu(x_base[editable] @ w.T), torch.relu(x_target[editable] @ w.T)
    by_hand = ((c_t - c_b) * (grad[editable] @ w.T)).sum(0)
    assert torch.allclose(p.attribution(grad), by_hand)


def test_kl_auc_known_curves():
    k_max = 15  # log2(1 + k_max) = 4
    assert kl_auc([Point(15, 2.0, 0.0, 0.0)], 2.0, k_max) == pytest.approx(1.0)  # nothing helps
    # KL drops to zero at k = 1 (x = 1/4) and stays there: triangle of area 1/8
    assert kl_auc([Point(1, 0.0, 1.0, 0.0)], 2.0, k_max) == pytest.approx(1 / 8)
    # past k_max the curve is cut at k_max: from (x=1/4, y=1) to (x=5/4, y=0) it is at y = 1/4 when x = 1
    assert kl_auc([Point(1, 2.0, 0.0, 0.0), Point(31, 0.0, 1.0, 0.0)], 2.0, k_max) == pytest.approx(0.25 + 0.75 * 1.25 / 2)


def test_kl_auc_is_linear_in_the_curve_and_a_ratio_of_per_prompt_sums():
    """The weights reproduce the area for any heights, so the area of the mean curve is sum(num) / sum(den) over
    prompts with num_i = w @ KL_i (KL_i0 the counterfactual run), den_i = KL_i0: what the task's interval resamples."""
    ks, k_max = [1, 2, 4, 7, 40], 15  # the last point lies past k_max: cut there
    w = kl_auc_weights(ks, k_max)
    rng = np.random.default_rng(0)
    kl = rng.uniform(0.1, 3.0, size=(9, 1 + len(ks)))  # 9 prompts, KL at k = 0 and at each k
    mean = kl.mean(0)
    area = kl_auc([Point(k, float(m), 0.0, 0.0) for k, m in zip(ks, mean[1:], strict=True)], float(mean[0]), k_max)
    assert area == pytest.approx(float((kl @ w).sum() / kl[:, 0].sum()), rel=1e-12)
    # by hand: x = log2(1+k)/4 = 1/4, ~0.396, ~0.580, 3/4, then 1 interpolated between k = 7 and k = 40
    assert w.sum() == pytest.approx(1.0)  # a flat curve at 1 has area 1
    assert kl_auc_weights([], k_max).tolist() == [1.0]  # no points: the counterfactual's KL all the way


def test_greedy_search_finds_the_features_that_matter():
    """A linear 'model' whose recovery is the share of two chosen dimensions moved: the greedy search, seeded with a
    ranking that puts six useless features among the useful ones, must drop exactly the useless ones."""
    d = 8
    x_base, x_target = torch.zeros(1, 1, d), torch.ones(1, 1, d)
    dictionary = LinearDictionary.from_matrices(torch.eye(d), torch.eye(d), signed=False)
    patcher = Patcher(dictionary, x_base, x_target, torch.ones(1, 1, dtype=torch.bool))
    useful = [2, 5]
    measure = lambda x: (0.0, float(x[0, 0, useful].sum()) / 2, {})  # noqa: E731 - (kl, recovery, per prompt)
    curves = Curves(patcher, measure, torch.ones(1, 1, dtype=torch.bool))
    ranking = torch.tensor([0, 2, 1, 3, 4, 5, 6, 7])
    points = list(curves.by_ranking(ranking))
    assert [p.k for p in points] == [1, 2, 4, 8]
    assert [p.recovery for p in points] == [0.0, 0.5, 0.5, 1.0]
    assert smallest_k(points, 0.5).k == 2 and smallest_k(points, 0.9).k == 8
    best = curves.prune(ranking, 8, 0.9, budget=20)
    assert best.k == 2 and best.recovery == 1.0
    assert curves.prune(ranking, 2, 0.5, budget=20).k == 1  # feature 0 is dropped, 2 alone holds half
    assert curves.prune(ranking, 8, 0.9, budget=0) is None
    assert curves.prune(torch.tensor([2, 5]), 1, 0.5, budget=20) is None  # one feature: nothing to drop


# --- the real model -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(store, model):
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: model)
    task = IOIPatching(n_prompts=6, greedy_passes=2)  # 6 prompts: enough units (5) for intervals
    task.prepare(ctx)
    return task, ctx


def test_the_model_does_ioi(prepared):
    task, _ = prepared
    s = task.model_stats
    assert s["logit_diff"] > 2.0 and s["accuracy"] >= 0.8 and task.does_task
    assert s["logit_diff_counterfactual"] < s["logit_diff"] and s["kl_counterfactual"] > 0.5


@pytest.fixture(scope="module")
def real_runs(prepared, model) -> tuple[torch.Tensor, torch.Tensor]:
    """The unpatched counterfactual and clean runs' logits at the real positions (the same for every dictionary)."""
    task, _ = prepared
    real = task.ds.real()
    return model.logits(task.ds.counterfactual)[real], model.logits(task.ds.clean)[real]


@pytest.mark.parametrize("name", IN_ALL)
def test_endpoints_are_the_real_runs(name, prepared, real_runs, store, model):
    """k = 0 gives the counterfactual run's logits, every feature plus the error term the clean run's."""
    task, ctx = prepared
    dictionary = methods.build_method(name, FAST.get(name), seed=0).fit(store.train)
    patcher = task.patcher(dictionary, ctx)
    ds, real = task.ds, task.ds.real()
    counterfactual, clean = real_runs

    def logits(x):
        return model.logits(ds.counterfactual, ctx.hook, lambda act: x.to(act))[real]

    none = torch.zeros(patcher.d_dict, dtype=torch.bool)
    every = torch.ones(patcher.d_dict, dtype=torch.bool)
    assert torch.equal(logits(patcher.activation(none)), counterfactual)
    assert torch.allclose(logits(patcher.activation(every, move_error=True)), clean, atol=2e-3)
    kl, recovery, per_prompt = task.measure(ctx, patcher.activation(every, move_error=True))
    assert kl < 1e-6 and recovery == pytest.approx(1.0, abs=1e-3)
    assert per_prompt["kl"].shape == per_prompt["ld"].shape == (len(ds),) and per_prompt["kl"].max() < 1e-5


@pytest.fixture(scope="module")
def neurons_out(prepared):
    task, ctx = prepared
    eye = torch.eye(ctx.store.d_model)
    return task.evaluate(LinearDictionary.from_matrices(eye, eye), ctx)  # neurons, signed


def test_evaluate_reports_curves_and_summaries(prepared, neurons_out):
    task, ctx = prepared
    out = neurons_out
    _check_evidence(task, ctx, out)
    m = {k: v.value for k, v in out.metrics.items()}
    assert set(m) == {"k50", "k90", "greedy_k50", "greedy_k90", "kl_auc", "edit_k50", "edit_k90", "error_effect"}
    assert m["error_effect"] == pytest.approx(0.0, abs=1e-3)  # a full basis leaves the error term nothing
    assert 1 <= m["greedy_k50"] <= m["k50"] <= m["k90"] and m["greedy_k90"] <= m["k90"]
    assert 0 < m["kl_auc"] < 1 and 0 < m["edit_k50"] < m["edit_k90"] < 1
    curve = out.details["attribution_curve"]
    assert [p["k"] for p in curve][-1] == out.details["n_moveable_features"]
    assert curve[-1]["kl"] < 0.01 and "does IOI" in out.details["board_notes"][0]


def _check_evidence(task, ctx, out):
    """Every metric has an interval or a reason; the ratio metrics' values are the task's own numbers."""
    n = len(task.ds)
    for name, metric in out.metrics.items():
        info = metric.interval_info
        assert info is not None and (metric.interval is not None or info.reason), name
        if metric.interval is not None:
            assert metric.evidence.ids == [f"ioi/{i}" for i in range(n)] and metric.evidence.unit == "prompt"
            assert metric.interval[0] <= metric.value <= metric.interval[1], name
    for name in ("k50", "k90", "greedy_k50", "greedy_k90"):
        assert out.metrics[name].evidence is None and "count" in out.metrics[name].interval_info.reason
    curve = [Point(p["k"], p["kl"], p["recovery"], p["edit"]) for p in out.details["attribution_curve"]]
    assert out.metrics["kl_auc"].value == pytest.approx(kl_auc(curve, task.model_stats["kl_counterfactual"],
                                                                2 * ctx.store.d_model), rel=1e-9)
    assert out.metrics["error_effect"].value == pytest.approx(1.0 - curve[-1].recovery, abs=1e-9)
    k50 = out.metrics["k50"].value
    if k50 is not None:
        at = next(p for p in curve if p.k == k50)
        assert out.metrics["edit_k50"].value == pytest.approx(at.edit / out.details["full_edit_norm"], rel=1e-6)
    prompts = out.details["prompts"]
    assert prompts["n_prompts"] == n and prompts["order"] == {"ABBA": n // 2, "BABA": n // 2}
    assert sum(t["ABBA"] + t["BABA"] for t in prompts["templates"]) == n
    assert all(p["recovery_interval"] is None or p["recovery_interval"][0] <= p["recovery"] <= p["recovery_interval"][1]
               for p in out.details["attribution_curve"])


def test_two_dictionaries_are_scored_on_the_same_prompts(prepared, neurons_out):
    """Pairing: the evidence names the same prompts whatever the dictionary."""
    task, ctx = prepared
    d = ctx.store.d_model
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))
    a = neurons_out
    b = task.evaluate(LinearDictionary.from_matrices(q.T.contiguous(), q.T.contiguous()), ctx)
    _check_evidence(task, ctx, b)
    for name in ("kl_auc", "error_effect"):
        assert a.metrics[name].evidence.ids == b.metrics[name].evidence.ids
        assert a.metrics[name].value != b.metrics[name].value


def test_a_model_that_fails_the_check_gets_no_curves(store, model):
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: model)
    task = IOIPatching(n_prompts=2, min_logit_diff=1e6)
    task.prepare(ctx)
    eye = torch.eye(ctx.store.d_model)
    out = task.evaluate(LinearDictionary.from_matrices(eye, eye), ctx)
    assert out.metrics == {} and "does not do IOI" in out.details["skipped"]
    assert "does NOT do IOI" in out.details["board_notes"][0]
