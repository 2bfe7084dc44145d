"""`sparse_probing`: can a few of a method's features tell real concepts apart, and is that better than a dense probe?

Concept: the genre of the document a context comes from (fiction, scripture, quotations, definitions, technical,
jargon in the shipped corpus), one binary probe per genre (this genre vs the rest). Each context is one example:
its codes are mean-pooled over its kept tokens. On the train split, the k features with the largest standardised
difference of class means are chosen (k in `ks`); a logistic-regression probe on them is scored on eval contexts
by AUROC, averaged over genres. A dense logistic-regression probe on the raw pooled activations (all d_model
dimensions) is the bar to beat: `dense_auroc`, the same for every method (Kantamneni et al. 2025).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from bench.dictionary import Dictionary
from bench.errors import BenchError
from tasks.base import Metric, Task, TaskContext, TaskOutput


def _pooled_contexts(split, n: int) -> tuple[list[torch.Tensor], np.ndarray]:
    """Kept activations of `n` contexts spread evenly over the split, and each context's genre."""
    idx = np.unique(np.linspace(0, split.n_contexts - 1, min(n, split.n_contexts)).round().astype(int))
    keep, doc = split.keep(), split.doc()
    acts = [split.context_activations(i, i + 1)[0][torch.from_numpy(keep[i])] for i in idx]
    genres = np.array([split.documents[doc[i]][1] for i in idx])
    return acts, genres


def _pool(contexts: list[torch.Tensor], fn) -> np.ndarray:
    """Mean over each context's tokens of fn(tokens) -> `[n_contexts, width]` float64."""
    return torch.stack([fn(x).double().mean(0) for x in contexts]).numpy()


def _probe_auroc(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, c: float) -> float:
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(scaler.transform(x_train), y_train)
    return float(roc_auc_score(y_eval, probe.decision_function(scaler.transform(x_eval))))


def top_features(codes: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k features with the largest |mean(pos) - mean(neg)| / pooled std. codes `[n, d_dict]`."""
    pos, neg = codes[y], codes[~y]
    spread = np.sqrt(0.5 * (pos.var(0) + neg.var(0))) + 1e-8
    score = np.abs(pos.mean(0) - neg.mean(0)) / spread
    return np.argsort(-score, kind="stable")[:k]


@dataclass
class SparseProbing(Task):
    ks: tuple[int, ...] = (1, 2, 5, 20)
    n_train_contexts: int = 512
    n_eval_contexts: int = 256
    min_examples: int = 10  # a genre needs this many contexts on each side of each split to be probed
    c: float = 1.0  # inverse L2 strength of the logistic regressions

    name = "sparse_probing"
    description = "genre probes on each method's top-k features vs a dense probe on the raw activations"
    topk_rows = False  # the features are chosen per concept here, so the top-k variants add nothing

    def prepare(self, ctx: TaskContext) -> None:
        self._train, self._y_train = _pooled_contexts(ctx.store.train, self.n_train_contexts)
        self._eval, self._y_eval = _pooled_contexts(ctx.store.eval, self.n_eval_contexts)
        self._genres = [
            g for g in sorted(set(self._y_train))
            if min((self._y_train == g).sum(), (self._y_train != g).sum(),
                   (self._y_eval == g).sum(), (self._y_eval != g).sum()) >= self.min_examples
        ]
        if not self._genres:
            raise BenchError("sparse_probing: no genre has enough contexts in both splits; use a labelled corpus "
                             "(the shipped one, or --text with a 'genre' field) and more eval contexts")
        raw_train, raw_eval = _pool(self._train, lambda x: x), _pool(self._eval, lambda x: x)
        self._dense = {g: _probe_auroc(raw_train, self._y_train == g, raw_eval, self._y_eval == g, self.c)
                       for g in self._genres}

    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        dictionary = dictionary.to(ctx.device)
        codes_train = _pool(self._train, lambda x: dictionary.encode(x.to(ctx.device)).cpu())
        codes_eval = _pool(self._eval, lambda x: dictionary.encode(x.to(ctx.device)).cpu())
        per_genre: dict[str, dict[str, float]] = {}
        for g in self._genres:
            y_train, y_eval = self._y_train == g, self._y_eval == g
            per_genre[g] = {"dense": self._dense[g]}
            for k in self.ks:
                chosen = top_features(codes_train, y_train, k)
                per_genre[g][f"k{k}"] = _probe_auroc(codes_train[:, chosen], y_train, codes_eval[:, chosen],
                                                     y_eval, self.c)
        metrics = {
            f"auroc_k{k}": Metric(float(np.mean([r[f"k{k}"] for r in per_genre.values()])), True,
                                  description=f"genre-probe AUROC on the top {k} features, mean over genres")
            for k in self.ks
        }
        metrics["dense_auroc"] = Metric(float(np.mean(list(self._dense.values()))), True,
                                        description="dense probe on the raw activations: the bar to beat")
        details = {"genres": self._genres, "per_genre": per_genre, "n_train_contexts": len(self._train),
                   "n_eval_contexts": len(self._eval)}
        return TaskOutput(metrics, details)
