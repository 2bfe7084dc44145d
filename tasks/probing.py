"""Probing pieces shared by the tasks that read concepts off features (sparse probing, concept erasure)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler


def probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
          c: float) -> tuple[float, float]:
    """(test AUROC, test balanced accuracy) of a standardised, class-balanced L2 logistic regression."""
    scaler = StandardScaler().fit(x_train)
    fitted = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(scaler.transform(x_train), y_train)
    z = scaler.transform(x_test)
    return (float(roc_auc_score(y_test, fitted.decision_function(z))),
            float(balanced_accuracy_score(y_test, fitted.predict(z))))


def top_features(codes: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k features with the largest |mean(pos) - mean(neg)| / pooled std. codes `[n, d_dict]`."""
    pos, neg = codes[y], codes[~y]
    spread = np.sqrt(0.5 * (pos.var(0) + neg.var(0))) + 1e-8
    score = np.abs(pos.mean(0) - neg.mean(0)) / spread
    return np.argsort(-score, kind="stable")[:k]


def spread(n_items: int, n: int) -> np.ndarray:
    """Up to n indices spread evenly over range(n_items) (all of them when n >= n_items), ascending."""
    return np.unique(np.linspace(0, n_items - 1, min(n, n_items)).round().astype(int))


def mean_by(values: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of the rows of values `[n_tokens, w]` that each of n examples owns (owner `[n_tokens]`): `[n, w]` float64."""
    out = torch.zeros(n, values.shape[1], dtype=torch.float64).index_add_(0, owner, values.double())
    return out / torch.bincount(owner, minlength=n)[:, None]
