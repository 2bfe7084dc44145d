"""Intervals, paired tests and rank groups (`bench.stats`) on cases whose answer is known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench.stats import (Evidence, compare_p, holm, interval, paired_p, rank_groups, seed_p, t_interval,
                         unpaired_p)


def _ids(n: int) -> list[str]:
    return [f"doc-{i}" for i in range(n)]


def test_statistics_reproduce_their_formulas():
    # ratio of sums, not mean of ratios: (1 + 3) / (2 + 6) = 0.5
    assert Evidence("document", _ids(2), "ratio", {"num": [1, 3], "den": [2, 6]}).value() == 0.5
    assert Evidence("prompt", _ids(3), "mean", {"x": [1, 2, 6]}).value() == 3.0
    # grouped: group 0 has units a, b (ratio 2/4), group 1 unit c (3/4); weights 1 and 3 -> (0.5 + 2.25) / 4
    grouped = Evidence("prompt", ["a", "b", "c"], "ratio", {"num": [[1, 0], [1, 0], [0, 3]], "den": [[2, 0], [2, 0], [0, 4]]},
                       {"grouped": True, "weight": [1, 3]})
    assert grouped.value() == pytest.approx(0.6875)
    # AUROC against sklearn, with ties, two problems and units outside one of them
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, size=(60, 2)).astype(float)
    label = rng.integers(0, 2, size=(60, 2))
    label[:10, 1] = -1
    ev = Evidence("prompt", _ids(60), "auroc", {"score": score, "label": label}, {"weight": [1, 2]})
    expected = [roc_auc_score(label[label[:, j] >= 0, j], score[label[:, j] >= 0, j]) for j in range(2)]
    assert ev.value() == pytest.approx((expected[0] + 2 * expected[1]) / 3)


def test_json_round_trip_keeps_the_value():
    ev = Evidence("document", _ids(4), "ratio", {"num": [0.1, 0.2, 0.3, 0.4], "den": [1, 1, 2, 2]})
    back = Evidence.from_json(ev.to_json())
    assert back.value() == pytest.approx(ev.value()) and back.ids == ev.ids and back.unit == "document"


def test_interval_covers_the_truth_at_its_nominal_rate():
    """A mean of 40 N(mu, 1) units: over 300 seeded repeated draws the 95% interval covers mu 90-99% of the time."""
    rng = np.random.default_rng(1)
    mu, covered = 0.3, 0
    for draw in range(300):
        x = rng.normal(mu, 1.0, size=40)
        info = interval(Evidence("prompt", _ids(40), "mean", {"x": x}), seed=draw, n_resamples=1000)
        covered += info.low <= mu <= info.high
        assert info.method == "BCa" and info.n == 40 and info.unit == "prompt"
    assert 0.90 <= covered / 300 <= 0.99


def test_ratio_interval_covers_the_truth():
    """Ratio of sums over clustered units (documents of different sizes): nominal coverage too."""
    rng = np.random.default_rng(2)
    covered = 0
    for draw in range(200):
        den = rng.integers(20, 200, size=50).astype(float)  # tokens per document
        num = rng.binomial(den.astype(int), 0.2).astype(float)  # errors, true rate 0.2
        info = interval(Evidence("document", _ids(50), "ratio", {"num": num, "den": den}), seed=draw, n_resamples=1000)
        covered += info.low <= 0.2 <= info.high
    assert 0.90 <= covered / 200 <= 0.99


def test_no_interval_when_too_few_units_or_degenerate():
    few = interval(Evidence("feature", _ids(3), "mean", {"x": [0.5, 0.5, 0.75]}))
    assert few.interval is None and "too few" in few.reason and few.n == 3
    same = interval(Evidence("feature", _ids(8), "mean", {"x": [0.5] * 8}))
    assert same.interval is None and "same value" in same.reason  # never [0.5, 0.5]


def _fvu_like(err: np.ndarray) -> Evidence:
    return Evidence("document", _ids(len(err)), "ratio", {"num": err, "den": np.full(len(err), 10.0)})


def test_noise_on_half_the_units_is_told_apart_and_identical_ones_tie():
    rng = np.random.default_rng(3)
    err = rng.gamma(4.0, 0.5, size=64)  # per-document squared error of dictionary A
    noisy = err.copy()
    noisy[::2] += rng.gamma(4.0, 0.1, size=32)  # B: A plus noise on half of the documents (only worse)
    a, b = _fvu_like(err), _fvu_like(noisy)
    # Unpaired, the extra error is small against the between-document spread; paired, it is unmistakable.
    assert paired_p(a, b) < 0.01
    assert paired_p(a, _fvu_like(err.copy())) == 1.0
    groups = rank_groups({"A": a.value(), "A-copy": a.value(), "B": b.value()}, False,
                         lambda x, y: paired_p({"A": a, "A-copy": a, "B": b}[x], {"A": a, "A-copy": a, "B": b}[y]))
    assert groups == {"A": 1, "A-copy": 1, "B": 2}


def test_a_difference_within_the_noise_is_a_tie():
    rng = np.random.default_rng(4)
    err = rng.gamma(4.0, 0.5, size=64)
    shifted = err + rng.normal(0, 0.5, size=64)  # no systematic difference
    assert paired_p(_fvu_like(err), _fvu_like(shifted)) > 0.05


def test_unpaired_when_units_differ():
    rng = np.random.default_rng(5)
    a = Evidence("feature", [f"a{i}" for i in range(30)], "mean", {"x": rng.normal(0.8, 0.1, 30)})
    b = Evidence("feature", [f"b{i}" for i in range(30)], "mean", {"x": rng.normal(0.5, 0.1, 30)})
    assert compare_p(a, b) == unpaired_p(a, b) < 0.01
    c = Evidence("feature", [f"c{i}" for i in range(30)], "mean", {"x": rng.normal(0.8, 0.1, 30)})
    assert compare_p(a, c) > 0.05


def test_unpaired_p_of_a_pair_does_not_depend_on_its_order():
    rng = np.random.default_rng(6)
    for n_b in (40, 25):  # equal sizes (where one random stream served both orders) and unequal
        a = Evidence("feature", [f"a{i}" for i in range(40)], "mean", {"x": rng.normal(0.53, 0.16, 40)})
        b = Evidence("feature", [f"b{i}" for i in range(n_b)], "mean", {"x": rng.normal(0.48, 0.16, n_b)})
        assert 0.001 < unpaired_p(a, b) == unpaired_p(b, a) == compare_p(b, a) < 1


def test_holm_by_hand():
    # sorted p: 0.01 <= 0.05/3, 0.02 <= 0.05/2, 0.04 <= 0.05/1: all rejected
    assert holm({"a": 0.02, "b": 0.01, "c": 0.04}) == {"a": True, "b": True, "c": True}
    # 0.03 > 0.05/2 stops the step-down: only the smallest is rejected
    assert holm({"a": 0.01, "b": 0.03, "c": 0.04}) == {"a": True, "b": False, "c": False}
    assert holm({"a": math.nan, "b": 0.001}) == {"a": False, "b": True}


def test_rank_groups_step_down():
    values = {"best": 1.0, "tied": 0.99, "second": 0.5, "second-tied": 0.49, "last": 0.0}
    close = {frozenset(p) for p in [("best", "tied"), ("second", "second-tied")]}
    groups = rank_groups(values, True, lambda a, b: 0.5 if frozenset((a, b)) in close else 0.0001)
    assert groups == {"best": 1, "tied": 1, "second": 2, "second-tied": 2, "last": 3}
    assert rank_groups({"a": 0.2, "b": 0.1}, False, lambda a, b: 0.0) == {"b": 1, "a": 2}  # lower is better


def test_seed_tests_and_t_interval():
    assert seed_p([0.2, 0.3, 0.4], [0.2, 0.3, 0.4]) == 1.0
    assert seed_p([0.20, 0.21, 0.22], [0.30, 0.31, 0.325]) < 0.01
    info = t_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.303: 2 -/+ 4.303 / sqrt(3)
    assert (info.low, info.high) == pytest.approx((2 - 4.3027 / 3**0.5, 2 + 4.3027 / 3**0.5), abs=1e-3)
    assert t_interval([1.0]).interval is None


def test_a_few_undefined_resamples_are_dropped_and_said_so():
    """A rare class: some resamples hold no positive, their AUROC is undefined; the rest still give an interval."""
    rng = np.random.default_rng(6)
    label = np.zeros((60, 1), dtype=int)
    label[:4, 0] = 1  # 4 positives in 60: P(a resample has none) = (56/60)^60 ~ 1.6%
    score = rng.normal(size=(60, 1)) + 1.5 * label
    info = interval(Evidence("prompt", _ids(60), "auroc", {"score": score, "label": label}))
    assert info.interval is not None and "undefined, dropped" in info.method
    lone = label.copy()
    lone[1:, 0] = 0  # one positive: most resamples are undefined, no interval
    assert interval(Evidence("prompt", _ids(60), "auroc", {"score": score, "label": lone})).interval is None


def test_groups_are_contiguous_in_value():
    """b is significantly worse than the best, c (ranked below b, noisier) is not: c does not join the best's group."""
    p = {("a", "b"): 0.001, ("a", "c"): 0.3, ("b", "c"): 0.6}
    groups = rank_groups({"a": 0.98, "b": 0.97, "c": 0.969}, True, lambda x, y: p[(x, y)])
    assert groups == {"a": 1, "b": 2, "c": 2}


def _auroc_by_ranks(score: np.ndarray, label: np.ndarray, weight: list[float]) -> np.ndarray:
    """A second computation of the resampled AUROC: rank each resample (scipy), Mann-Whitney per problem.
    score, label `[..., m, P]` -> `[...]`."""
    from scipy.stats import rankdata

    total = 0.0
    for j, w in enumerate(weight):
        s, lab = score[..., j], label[..., j]
        ranks = rankdata(np.where(lab >= 0, s, np.nan), axis=-1, nan_policy="omit")
        pos, neg = (lab == 1).sum(-1), (lab == 0).sum(-1)
        rank_pos = np.where(lab == 1, ranks, 0.0).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = total + w * (rank_pos - pos * (pos + 1) / 2) / (pos * neg)
    return total / sum(weight)


def test_auroc_by_counts_equals_auroc_by_ranks():
    """The resampled AUROC is computed from unit multiplicities (a matrix product); it equals ranking each resample."""
    rng = np.random.default_rng(7)
    score = rng.integers(0, 4, size=(50, 3)).astype(float)  # many ties
    label = rng.integers(-1, 2, size=(50, 3))
    ev = Evidence("prompt", _ids(50), "auroc", {"score": score, "label": label}, {"weight": [1, 2, 3]})
    idx = rng.integers(0, 50, size=(4, 30, 50))
    by_ranks = _auroc_by_ranks(score[idx], label[idx], [1, 2, 3])
    assert ev.at(idx).shape == (4, 30) and np.allclose(ev.at(idx), by_ranks, equal_nan=True)


def test_evidence_whose_ids_do_not_pair_is_compared_unpaired():
    """Autointerp's feature 3 of one dictionary is not feature 3 of another: equal ids must not pair them."""
    g = np.random.default_rng(0)
    base = g.normal(0, 1, 30)
    a = Evidence("feature", [str(i) for i in range(30)], "mean", {"x": base + 0.3}, paired=False)
    b = Evidence("feature", [str(i) for i in range(30)], "mean", {"x": base}, paired=False)
    # paired by id the constant shift of 0.3 would be certain; unpaired it is within the spread of 30 values of sd 1
    assert paired_p(Evidence("f", a.ids, "mean", a.columns), Evidence("f", b.ids, "mean", b.columns)) < 0.001
    assert compare_p(a, b) == pytest.approx(unpaired_p(a, b)) and compare_p(a, b) > 0.05
    back = Evidence.from_json(a.to_json())
    assert back.paired is False and "paired" not in Evidence("f", a.ids, "mean", a.columns).to_json()
