"""Scores of autointerp, each a plain function tested on cases whose answer is known by construction."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.stats import Evidence
from tasks.base import Metric


def finite_or_none(v: float | None) -> float | None:
    """A score as JSON stores it: NaN (undefined, e.g. one class only) becomes None."""
    return None if v is None or not np.isfinite(v) else float(v)


def correlation(predicted: np.ndarray, true: np.ndarray) -> float:
    """Pearson correlation (Bills et al.'s simulation score); 0 when either side is constant (nothing predicted)."""
    p, t = np.asarray(predicted, float), np.asarray(true, float)
    if p.std() == 0 or t.std() == 0:
        return 0.0
    return float(np.corrcoef(p, t)[0, 1])


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half); NaN without both classes."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def auroc_variance(scores: np.ndarray, labels: np.ndarray) -> float:
    """DeLong's variance of the AUROC over the samples it was computed from (the within-feature, sampling part of a
    per-feature score's variance): var(V10)/m + var(V01)/n, with V10_i the share of negatives positive i outranks
    (ties half) and V01_j the share of positives that outrank negative j. NaN with fewer than 2 of either class."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    if len(pos) < 2 or len(neg) < 2:
        return float("nan")
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return float(psi.mean(1).var(ddof=1) / len(pos) + psi.mean(0).var(ddof=1) / len(neg))


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Mean of the true-positive and true-negative rates of `score > threshold`; NaN without both classes."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    if y.all() or not y.any():
        return float("nan")
    said = s > threshold
    return float(0.5 * (said[y].mean() + (~said[~y]).mean()))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold that maximises balanced accuracy (midpoint between neighbouring scores; ties to the lowest).

    Small judges' yes-probabilities are biased (e.g. all above 0.5), so a fixed 0.5 reads as chance even when
    their ranking is good: the threshold is calibrated per judge on controls whose answers are known.
    """
    s = np.unique(np.asarray(scores, float))
    candidates = np.concatenate([[s[0] - 1e-9], (s[1:] + s[:-1]) / 2, [s[-1]]]) if len(s) else np.array([0.5])
    accuracies = [balanced_accuracy(scores, labels, t) for t in candidates]
    return float(candidates[int(np.nanargmax(accuracies))]) if not np.all(np.isnan(accuracies)) else 0.5


def feature_mean(keys: Sequence[str], values: Sequence[float], description: str, seed: int) -> Metric:
    """Mean of a per-feature score (higher is better) over the features where it is defined, with a bootstrap
    interval over those features (`bench.stats`: none, with the reason, below 5 features or when every resample
    gives the same value). keys `[n]` name the features (their index in the dictionary), values `[n]`, NaN where
    the score is undefined (e.g. detection with one class left). Features are each method's own sample, so ids do
    not pair two methods (two dictionaries of one width share indices: `paired=False` keeps them apart); the
    interval covers the sampling of features and the judge's noise on each."""
    v = np.asarray(values, float)
    ok = np.isfinite(v)
    if not ok.any():
        return Metric.without_interval(float("nan"), True, description, "no sampled feature has this score",
                                       unit="feature", n=0)
    evidence = Evidence("feature", [k for k, o in zip(keys, ok, strict=True) if o], "mean", {"x": v[ok]},
                        sources=("features sampled", "judge"), paired=False)
    return Metric.of(evidence, True, description, seed=seed)
