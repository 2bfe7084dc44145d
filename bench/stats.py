"""Uncertainty: the per-unit evidence behind a metric, bootstrap intervals, paired tests and rank groups.

A metric is a statistic of independent units: documents for token-level metrics (tokens of one document are not
independent), prompts for IOI, erasure and probing, features for autointerp, seeds where seeds vary. `Evidence`
keeps each unit's contribution, so that

1. the task puts a bootstrap interval on the metric (`interval`: scipy's BCa where it is defined, else percentile;
   absent, with the reason, where n is too small or every resample gives the same value), and
2. reports compare two methods scored on the same units *paired* (`paired_p`: a paired bootstrap of the
   difference; `seed_p`: a paired t-test when seeds are the units), and split a column into rank groups
   (`rank_groups`: every method against the group's best, Holm-corrected).

Statistics (columns have the units on their first axis; `params` are not resampled):
    mean   x                      mean(x)
    ratio  num, den               sum(num) / sum(den)         (FVU, loss recovered, KL per token: ratios of sums)
           with params grouped=True the columns are `[n, G]` (G groups, e.g. concept x k; NaN (mean) or 0 (ratio)
           where a unit is not in a group) and the metric is the weighted mean over groups (params `weight` [G])
    auroc  score, label [n, P]    weighted mean over problems p of the AUROC of score[:, p] for label[:, p] (1
                                  positive, 0 negative, -1 not in that problem); params: weight [P]
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

VERSION = 1  # of the interval and test code: results join it to their resume check (bench.units.code_versions)
CONFIDENCE = 0.95
ALPHA = 0.05
N_RESAMPLES = 2000
MIN_UNITS = 5  # fewer units than this: no interval (a bootstrap over 3 values is not an interval)
MIN_SEEDS = 3  # a t-interval or t-test over 2 seeds (1 degree of freedom, t = 12.7) says nothing
MAX_UNDEFINED = 0.05  # share of undefined resamples that may be dropped from a percentile interval
TINY = 1e-6  # relative spread of float32 rounding: "the same value" (an exact reconstruction: FVU ~1e-16, CE noise ~1e-8)


# --- statistics --------------------------------------------------------------------------------------------
def _groups(per_group: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """`[..., G]` per-group values -> their weighted mean `[...]` (params `weight` [G], default equal)."""
    weight = np.asarray(p.get("weight", np.ones(per_group.shape[-1])), dtype=float)
    return (per_group * weight).sum(-1) / weight.sum()


def _mean(c: dict[str, np.ndarray], p: dict[str, Any], idx: np.ndarray) -> np.ndarray:
    x = c["x"][idx]
    if p.get("grouped"):  # x `[..., n, G]`, NaN where a unit is not in a group
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _groups(np.nanmean(x, axis=-2), p)
    return x.mean(-1)


def _ratio(c: dict[str, np.ndarray], p: dict[str, Any], idx: np.ndarray) -> np.ndarray:
    num, den = c["num"][idx], c["den"][idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        if p.get("grouped"):  # num, den `[..., n, G]`, 0 where a unit is not in a group
            return _groups(num.sum(-2) / den.sum(-2), p)
        return num.sum(-1) / den.sum(-1)


def _auroc(c: dict[str, np.ndarray], p: dict[str, Any], idx: np.ndarray) -> np.ndarray:
    """score, label `[n, P]`; per problem the Mann-Whitney AUROC (ties count half), then the weighted mean.

    A resample is a multiplicity w_u per unit, so a problem's AUROC is w_pos @ K @ w_neg / (sum w_pos * sum w_neg)
    with K[a, b] = [s_a > s_b] + [s_a = s_b] / 2 fixed: one matrix product per problem instead of ranking every
    resample (tests/test_stats.py checks it against ranking)."""
    score, label = c["score"], c["label"]
    lead, m = idx.shape[:-1], idx.shape[-1]
    flat = idx.reshape(-1, m)
    offsets = (np.arange(len(flat)) * len(score))[:, None]
    counts = np.bincount((flat + offsets).ravel(), minlength=len(flat) * len(score)).reshape(len(flat), len(score))
    counts = counts.astype(float)  # for BLAS
    weight = np.asarray(p.get("weight", np.ones(score.shape[1])), dtype=float)
    total = np.zeros(len(flat))
    for j in range(score.shape[1]):
        pos, neg = label[:, j] == 1, label[:, j] == 0
        sp, sn = score[pos, j], score[neg, j]
        kernel = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
        wp, wn = counts[:, pos], counts[:, neg]
        with np.errstate(invalid="ignore", divide="ignore"):
            total += weight[j] * ((wp @ kernel) * wn).sum(1) / (wp.sum(1) * wn.sum(1))
    return (total / weight.sum()).reshape(lead)


# (columns `[n, ...]`, params, unit indices `[..., m]`) -> the statistic on those units `[...]`
STATISTICS: dict[str, Callable[[dict[str, np.ndarray], dict[str, Any], np.ndarray], np.ndarray]] = {
    "mean": _mean, "ratio": _ratio, "auroc": _auroc}


@dataclass
class Evidence:
    """The units behind one metric. `ids` name the units: two methods scored on the same units share ids, which is
    what pairs them. `sources` say which sources of variance a resampling of these units covers."""

    unit: str  # "document", "prompt", "feature", "ground-truth feature", "seed", ...
    ids: list[str]
    statistic: str
    columns: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ("eval sample",)
    # False where equal ids do not name the same unit in two results (autointerp: feature 986 of one dictionary is
    # not feature 986 of another): such evidence is only ever compared unpaired.
    paired: bool = True

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"unknown statistic {self.statistic!r}; one of {', '.join(STATISTICS)}")
        self.columns = {k: np.asarray(v, dtype=float) for k, v in self.columns.items()}
        self.ids = [str(i) for i in self.ids]
        lengths = {len(v) for v in self.columns.values()}
        if lengths != {len(self.ids)}:
            raise ValueError(f"every column needs one row per unit ({len(self.ids)}); got lengths {sorted(lengths)}")

    @property
    def n(self) -> int:
        return len(self.ids)

    def at(self, idx: np.ndarray) -> np.ndarray:
        """The statistic on units `idx` (`[..., m]` integer indices, resampled rows along the last axis)."""
        return STATISTICS[self.statistic](self.columns, self.params, np.asarray(idx, dtype=int))

    def value(self) -> float:
        return float(self.at(np.arange(self.n)))

    def subset(self, ids: Sequence[str]) -> "Evidence":
        where = {u: i for i, u in enumerate(self.ids)}
        idx = np.array([where[u] for u in ids], dtype=int)
        return Evidence(self.unit, list(ids), self.statistic, {k: v[idx] for k, v in self.columns.items()},
                        self.params, self.sources, self.paired)

    def to_json(self) -> dict[str, Any]:
        out = {"unit": self.unit, "ids": self.ids, "statistic": self.statistic, "sources": list(self.sources),
               "columns": {k: _compact(v) for k, v in self.columns.items()},
               "params": {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
                          for k, v in self.params.items()}}
        if not self.paired:
            out["paired"] = False
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Evidence":
        return cls(data["unit"], data["ids"], data["statistic"],
                   {k: np.asarray(v, dtype=float) for k, v in data["columns"].items()},
                   data.get("params", {}), tuple(data.get("sources", ("eval sample",))), data.get("paired", True))


def _compact(v: np.ndarray) -> list:
    """Floats to 7 significant digits (float32's precision: result files stay small and diff-able)."""
    return np.vectorize(lambda x: float(f"{x:.7g}"), otypes=[float])(v).tolist() if v.size else v.tolist()


# --- intervals ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IntervalInfo:
    """How an interval was obtained, or why there is none (`reason`)."""

    unit: str
    n: int
    sources: tuple[str, ...]
    method: str | None = None  # "BCa", "percentile", "t"
    low: float | None = None
    high: float | None = None
    reason: str | None = None
    confidence: float = CONFIDENCE

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    def to_json(self) -> dict[str, Any]:
        out = {"unit": self.unit, "n": self.n, "sources": list(self.sources), "confidence": self.confidence}
        if self.reason:
            out["reason"] = self.reason
        else:
            out["method"] = self.method
        return out


def _bootstrap(sizes: tuple[int, ...], statistic: Callable[..., np.ndarray], seed: int, method: str,
               n_resamples: int = N_RESAMPLES):
    """scipy's bootstrap over unit indices: one sample 0..n-1 per size, resampled independently; the statistic
    takes one index array `[..., m]` per sample and reads the units' columns itself."""
    from scipy.stats import bootstrap

    def stat(*idx: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(*(np.moveaxis(np.asarray(i, dtype=int), axis, -1) for i in idx))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bootstrap(tuple(np.arange(n) for n in sizes), stat, n_resamples=n_resamples, vectorized=True,
                         method=method, confidence_level=CONFIDENCE, rng=np.random.default_rng(seed), batch=200)


def interval(ev: Evidence, seed: int = 0, n_resamples: int = N_RESAMPLES) -> IntervalInfo:
    """A 95% bootstrap interval over the evidence's units: BCa where defined, else percentile; none (with the
    reason) when there are too few units or every resample gives the same value."""
    info = dict(unit=ev.unit, n=ev.n, sources=tuple(ev.sources))
    if ev.n < MIN_UNITS:
        return IntervalInfo(**info, reason=f"{ev.n} {ev.unit}s: too few for an interval (needs {MIN_UNITS})")
    if not math.isfinite(ev.value()):
        return IntervalInfo(**info, reason="the metric is not finite")
    for method in ("BCa", "percentile"):
        res = _bootstrap((ev.n,), ev.at, seed, method, n_resamples)
        dist = res.bootstrap_distribution
        finite = dist[np.isfinite(dist)]
        if finite.size and np.ptp(finite) <= TINY * max(1.0, float(np.abs(finite).max())):
            return IntervalInfo(**info, reason=f"every resample of the {ev.n} {ev.unit}s gives the same value")
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return IntervalInfo(**info, method=method, low=lo, high=hi)
        undefined = 1 - finite.size / max(dist.size, 1)
        if 0 < undefined <= MAX_UNDEFINED:
            # A few resamples leave a rare class out (its AUROC is undefined): the percentile interval of the others,
            # saying how many were dropped, rather than no interval at all.
            lo, hi = np.percentile(finite, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
            return IntervalInfo(**info, method=f"percentile ({100 * undefined:.1f}% of resamples undefined, dropped)",
                                low=float(lo), high=float(hi))
    return IntervalInfo(**info, reason="the bootstrap is undefined here (too many resamples without both classes)")


def t_interval(values: Sequence[float], unit: str = "seed",
               sources: tuple[str, ...] = ("seeds",)) -> IntervalInfo:
    """Student-t interval of the mean of a few values (seeds): a bootstrap over 2 or 3 values is degenerate."""
    from scipy.stats import ttest_1samp

    x = np.asarray(values, dtype=float)
    info = dict(unit=unit, n=len(x), sources=sources)
    if len(x) < MIN_SEEDS:
        return IntervalInfo(**info, reason=f"{len(x)} {unit}s: too few for an interval (needs {MIN_SEEDS}); the spread "
                            "is shown")
    if np.ptp(x) <= TINY * max(1.0, float(np.abs(x).max())):
        return IntervalInfo(**info, reason=f"all {len(x)} {unit}s give the same value")
    ci = ttest_1samp(x, x.mean()).confidence_interval(CONFIDENCE)
    return IntervalInfo(**info, method="t", low=float(ci.low), high=float(ci.high))


# --- paired tests ------------------------------------------------------------------------------------------
def paired_p(a: Evidence, b: Evidence, seed: int = 0, n_resamples: int = N_RESAMPLES) -> float:
    """Two-sided p-value of 'a and b score the same' from a paired bootstrap of stat(a) - stat(b) over their
    shared units (resampled together). Units not shared are left out; fewer than `MIN_UNITS` shared: p = nan."""
    shared = [u for u in a.ids if u in set(b.ids)]
    if len(shared) < MIN_UNITS or a.statistic != b.statistic:
        return math.nan
    a, b = a.subset(shared), b.subset(shared)
    if all(np.array_equal(a.columns[k], b.columns[k], equal_nan=True) for k in a.columns) and a.params == b.params:
        return 1.0  # the same numbers on the same units (a dense probe that ignores the dictionary)

    def diff(idx: np.ndarray) -> np.ndarray:
        return a.at(idx) - b.at(idx)

    observed = float(diff(np.arange(len(shared))))
    if not math.isfinite(observed):
        return math.nan
    return _p_from(_bootstrap((len(shared),), diff, seed, "percentile", n_resamples).bootstrap_distribution)


def unpaired_p(a: Evidence, b: Evidence, seed: int = 0, n_resamples: int = N_RESAMPLES) -> float:
    """Two-sided p-value of 'a and b score the same' when their units differ (each method's own sampled
    features): a bootstrap of stat(a) - stat(b) resampling each side's units independently."""
    if min(a.n, b.n) < MIN_UNITS or a.statistic != b.statistic:
        return math.nan
    # Resample in one order whichever side comes first: the two-sided p of a pair must not depend on the order (with
    # the sides swapped the same random stream would draw other resamples: 0.045 one way, 0.064 the other, measured).
    if _order_key(b) < _order_key(a):
        a, b = b, a

    def diff(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return a.at(i) - b.at(j)

    return _p_from(_bootstrap((a.n, b.n), diff, seed, "percentile", n_resamples).bootstrap_distribution)


def _order_key(e: Evidence) -> tuple[int, list[str], bytes]:
    """A total order on evidence by content (units, ids, values), for order-independent resampling."""
    values = b"".join(k.encode() + np.ascontiguousarray(e.columns[k]).tobytes() for k in sorted(e.columns))
    return e.n, e.ids, values


def compare_p(a: Evidence, b: Evidence, seed: int = 0) -> float:
    """Paired over the shared units when the two share at least `MIN_UNITS` of them, unpaired when they share
    none or either side's ids do not pair (`Evidence.paired`: each method's own features), nan otherwise."""
    if not (a.paired and b.paired):
        return unpaired_p(a, b, seed)
    shared = len(set(a.ids) & set(b.ids))
    if shared >= MIN_UNITS:
        return paired_p(a, b, seed)
    return unpaired_p(a, b, seed) if shared == 0 else math.nan


def _p_from(dist: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value of 'difference = 0': the percentile interval of the difference
    excludes 0 at level alpha iff p < alpha."""
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return math.nan
    if np.all(dist == 0):
        return 1.0
    below, above = (np.sum(dist <= 0) + 1) / (dist.size + 1), (np.sum(dist >= 0) + 1) / (dist.size + 1)
    return float(min(1.0, 2 * min(below, above)))


def seed_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test over seeds (seed i of a against seed i of b); equal values: p = 1."""
    from scipy.stats import ttest_rel

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y) or len(x) < MIN_SEEDS:
        return math.nan
    if np.all(x == y):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(ttest_rel(x, y).pvalue)
    return 0.0 if math.isnan(p) else p  # a constant non-zero difference: t is infinite


def holm(pvalues: dict[str, float], alpha: float = ALPHA) -> dict[str, bool]:
    """Holm's step-down: which hypotheses are rejected at family-wise level alpha (nan p: never rejected)."""
    order = sorted(pvalues, key=lambda k: (math.isnan(pvalues[k]), pvalues[k]))
    rejected = dict.fromkeys(pvalues, False)
    m = len(order)
    for i, key in enumerate(order):
        p = pvalues[key]
        if math.isnan(p) or p > alpha / (m - i):
            break
        rejected[key] = True
    return rejected


def rank_groups(values: dict[str, float], higher_is_better: bool, p_value: Callable[[str, str], float],
                alpha: float = ALPHA) -> dict[str, int]:
    """Rank groups of a column: group 1 is the best method and, in order of value, every method up to the first
    one significantly worse than it (p_value(best, other), Holm-corrected over the others); group 2 is found the
    same way among the rest, and so on. Methods without a finite value get no group, nor do methods that cannot be tested against the best
    (p nan: too few units); a best that cannot be tested against anyone gets none either."""
    left = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    groups: dict[str, int] = {}
    group = 1
    while left:
        best = max(left, key=lambda k: left[k] if higher_is_better else -left[k])
        others = [k for k in left if k != best]
        pvalues = {k: p_value(best, k) for k in others}
        untestable = [k for k, p in pvalues.items() if math.isnan(p)]
        for k in untestable:
            del left[k], pvalues[k]
        if others and not pvalues:  # nothing could be compared with the best: no verdict
            del left[best]
            continue
        rejected = holm(pvalues, alpha)
        # Groups are contiguous in value: a method ranked below one that is significantly worse than the best does
        # not join the best's group, even if its own (noisier) difference is not significant.
        members = [best]
        for k in sorted(pvalues, key=lambda k: -left[k] if higher_is_better else left[k]):
            if rejected[k]:
                break
            members.append(k)
        for k in members:
            groups[k] = group
            del left[k]
        group += 1
    return groups
