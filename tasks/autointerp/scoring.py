"""Scores of autointerp, each a plain function tested on cases whose answer is known by construction."""

from __future__ import annotations

import numpy as np


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


def bootstrap_interval(values: np.ndarray, seed: int, n_resamples: int = 2000, level: float = 0.95
                       ) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean over features; None with fewer than two values."""
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if len(v) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_resamples, len(v)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
