"""Probing pieces shared by the tasks that read concepts off features (sparse probing, concept erasure): the probe,
the DiffMean direction, feature ranking, pooling, and the per-unit evidence behind probe metrics (`bench.stats`).

A probe is fitted on the train split and scored on test examples; its test scores are then held fixed, so the
intervals built here resample the test units only: they cover test-sample variance, not refitting the probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from bench.stats import Evidence

PROBE_SOURCES = ("test sample (the probe, fitted on train, held fixed)",)


@dataclass(frozen=True)
class ProbeResult:
    """A fitted probe's view of the test examples: decision scores `[n_test]`, predicted labels `[n_test]` bool."""

    score: np.ndarray
    pred: np.ndarray
    label: np.ndarray  # `[n_test]` bool, the truth

    @property
    def auroc(self) -> float:
        return float(roc_auc_score(self.label, self.score))

    @property
    def accuracy(self) -> float:
        """Balanced accuracy: mean over the two classes of the share predicted right (chance 0.5 at any prior)."""
        return float(balanced_accuracy_score(self.label, self.pred))

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.label


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              c: float) -> ProbeResult:
    """A standardised, class-balanced L2 logistic regression fitted on train, read on test. x `[n, w]`, y `[n]`."""
    scaler = StandardScaler().fit(x_train)
    fitted = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(scaler.transform(x_train), y_train)
    z = scaler.transform(x_test)
    return ProbeResult(fitted.decision_function(z), fitted.predict(z).astype(bool), np.asarray(y_test, dtype=bool))


def probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
          c: float) -> tuple[float, float]:
    """(test AUROC, test balanced accuracy) of `fit_probe`."""
    r = fit_probe(x_train, y_train, x_test, y_test, c)
    return r.auroc, r.accuracy


def diffmean(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> ProbeResult:
    """DiffMean (AxBench, Wu et al. 2025): the direction w = mean(x | pos) - mean(x | neg) on train, read on test as
    the score x . w; the prediction thresholds it half-way between the train class means' projections (nothing is
    fitted beyond the two means). x `[n, w]`, y `[n]` bool."""
    y_train = np.asarray(y_train, dtype=bool)
    pos, neg = x_train[y_train].mean(0), x_train[~y_train].mean(0)
    w = pos - neg
    score = x_test @ w
    return ProbeResult(score, score > 0.5 * (pos + neg) @ w, np.asarray(y_test, dtype=bool))


def top_features(codes: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k features with the largest |mean(pos) - mean(neg)| / pooled std. codes `[n, d_dict]`."""
    pos, neg = codes[y], codes[~y]
    spread = np.sqrt(0.5 * (pos.var(0) + neg.var(0))) + 1e-8
    score = np.abs(pos.mean(0) - neg.mean(0)) / spread
    return np.argsort(-score, kind="stable")[:k]


def mean_by(values: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of the rows of values `[n_tokens, w]` that each of n examples owns (owner `[n_tokens]`): `[n, w]` float64."""
    out = torch.zeros(n, values.shape[1], dtype=torch.float64).index_add_(0, owner, values.double())
    return out / torch.bincount(owner, minlength=n)[:, None]


# --- evidence ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scored:
    """One binary problem's test examples as a probe saw them. `ids` `[n]` name each example's unit (examples
    of one unit, e.g. contexts of one document, share it); `weight`: the problem's weight in a mean over problems."""

    ids: list[str]
    label: np.ndarray  # `[n]` bool
    score: np.ndarray  # `[n]` decision score
    pred: np.ndarray  # `[n]` bool
    weight: float = 1.0

    @classmethod
    def of(cls, ids: list[str], r: ProbeResult, weight: float = 1.0) -> Scored:
        return cls(list(ids), r.label, r.score, r.pred, weight)


def _unit_order(problems: list[Scored]) -> tuple[list[str], dict[str, int]]:
    ids = list(dict.fromkeys(u for p in problems for u in p.ids))
    return ids, {u: i for i, u in enumerate(ids)}


def auroc_evidence(problems: list[Scored], unit: str) -> Evidence:
    """`auroc` evidence: the weighted mean over problems of each problem's test AUROC. One example per unit and
    problem (AUROC ranks examples, so a unit cannot hold several); units outside a problem are labelled -1."""
    ids, where = _unit_order(problems)
    score = np.zeros((len(ids), len(problems)))
    label = -np.ones((len(ids), len(problems)))
    for j, p in enumerate(problems):
        rows = [where[u] for u in p.ids]
        if len(set(rows)) != len(rows):
            raise ValueError("auroc evidence needs one example per unit and problem")
        score[rows, j], label[rows, j] = p.score, p.label.astype(float)
    return Evidence(unit, ids, "auroc", {"score": score, "label": label},
                    {"weight": [p.weight for p in problems]}, PROBE_SOURCES)


def accuracy_evidence(problems: list[Scored], unit: str) -> Evidence:
    """Grouped `ratio` evidence reproducing the weighted mean over problems of balanced accuracy: groups are
    (problem, class), num = a unit's correct examples in the group, den = its examples there, each problem's two
    classes weighted half its weight. Units may hold several examples (a document's contexts)."""
    ids, where = _unit_order(problems)
    num = np.zeros((len(ids), 2 * len(problems)))
    den = np.zeros_like(num)
    weight = []
    for j, p in enumerate(problems):
        rows = np.array([where[u] for u in p.ids], dtype=int)
        correct = (p.pred == p.label).astype(float)
        for cls in (0, 1):
            mine = p.label == bool(cls)
            np.add.at(num[:, 2 * j + cls], rows[mine], correct[mine])
            np.add.at(den[:, 2 * j + cls], rows[mine], 1.0)
            weight.append(p.weight / 2)
    return Evidence(unit, ids, "ratio", {"num": num, "den": den}, {"grouped": True, "weight": weight},
                    PROBE_SOURCES)
