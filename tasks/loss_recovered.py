"""`loss_recovered`: does the model still work when its activation is replaced by the reconstruction?

On eval contexts, next-token cross-entropy (CE) of the model when the activation at the hook is
    clean       left alone,
    spliced     replaced by decode(encode(x)),
    zero        replaced by 0,
    mean        replaced by the mean training activation,
at the positions the exclusion rule keeps (excluded positions, e.g. attention sinks, pass through unchanged).
    loss_recovered      = (CE_zero - CE_spliced) / (CE_zero - CE_clean)
    loss_recovered_mean = (CE_mean - CE_spliced) / (CE_mean - CE_clean)
    kl                  = mean over predicted positions of KL(p_clean || p_spliced)

The contexts are spread over the eval split's documents and genres (`spread_contexts`, seeded by the run's seed;
one per document until every document has one). Unit: the document. Each metric is a ratio of per-document sums
(CE sums, KL sums, prediction counts), equal to the formula above on all contexts together, with a bootstrap
interval over documents; the clean and ablated runs are resampled with the spliced one (same documents).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.dictionary import Dictionary
from bench.specs import positive
from bench.stats import Evidence
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.divergence import CleanDistribution
from tasks.sampling import coverage, split_genres, spread_contexts

Replace = Callable[[torch.Tensor], torch.Tensor]  # kept activations [n, d] -> replacement [n, d]


@dataclass
class LossRecovered(Task):
    n_contexts: int = positive(32)
    batch_size: int = positive(8)

    name = "loss_recovered"
    description = "cross-entropy with the reconstruction spliced in, against zero and mean ablation; KL to clean"
    needs_model = True

    def prepare(self, ctx: TaskContext) -> None:
        model, split = ctx.model, ctx.store.eval
        doc, genres = split.doc(), split_genres(split)
        self._idx = spread_contexts(doc, genres, self.n_contexts, ctx.seed, self.name)  # `[C]` ascending
        self._coverage = coverage(doc, genres, self._idx)
        # The units: each picked context's document, and the documents' ids (data only: pairs dictionaries).
        self._docs, self._unit = np.unique(doc[self._idx], return_inverse=True)  # `[D]`, `[C]` -> 0..D-1
        self._ids = [split.documents[d][0] for d in self._docs]
        self._genre = [genres[d] for d in self._docs]
        tokens = torch.from_numpy(split.tokens()[self._idx]).long()
        self._batches = list(tokens.split(self.batch_size))
        self._clean: list[CleanDistribution] = []  # per batch, `[B, T-1, V]`
        self._clean_x: list[torch.Tensor] = []  # the clean activation at the hook: edited passes start there
        ce = []
        for tb in self._batches:
            logits, x = model.logits_and_activations(tb, ctx.store.hook)
            logp = F.log_softmax(logits.float(), dim=-1)[:, :-1]
            self._clean.append(CleanDistribution(logp))
            self._clean_x.append(x)
            ce.append(_ce_per_context(logp, tb))
        self._n = self._per_doc(np.full(len(self._idx), tokens.shape[1] - 1, dtype=float))  # predictions `[D]`
        self._ce_clean = self._per_doc(np.concatenate(ce))
        mean = ctx.store.train.kept_activations(min(ctx.store.train.n_kept, 100_000), seed=ctx.seed).mean(0)
        self._ce_zero, self._kl_zero = self._run(ctx, lambda x: torch.zeros_like(x))
        self._ce_mean, self._kl_mean = self._run(ctx, lambda x: mean.to(x).expand_as(x))
        n = self._n.sum()
        self.ce_clean, self.ce_zero, self.ce_mean = (float(v.sum() / n) for v in (self._ce_clean, self._ce_zero,
                                                                                    self._ce_mean))
        self.kl_zero, self.kl_mean = float(self._kl_zero.sum() / n), float(self._kl_mean.sum() / n)

    def _per_doc(self, per_context: np.ndarray) -> np.ndarray:
        """`[C]` per-context sums -> `[D]` per-document sums."""
        return np.bincount(self._unit, weights=per_context, minlength=len(self._docs))

    def _run(self, ctx: TaskContext, replace: Replace) -> tuple[np.ndarray, np.ndarray]:
        """Per-document sums `[D]` of CE and of KL(clean || edited), with `replace` applied at the kept positions."""
        model, store = ctx.model, ctx.store
        ce, kl = [], []
        for tb, clean, clean_x in zip(self._batches, self._clean, self._clean_x, strict=True):

            def edit(act: torch.Tensor, tb: torch.Tensor = tb) -> torch.Tensor:
                keep = store.exclusion.mask(tb.to(act.device), act, model.special_ids, store.reference_norm)
                out = act.clone()
                out[keep] = replace(act[keep]).to(act.dtype)
                return out

            logp = F.log_softmax(model.logits(tb, ctx.store.hook, edit, clean=clean_x).float(), dim=-1)[:, :-1]
            ce.append(_ce_per_context(logp, tb))
            kl_ctx = clean.kl(logp).sum(1)
            # KL >= 0; float rounding can leave ~-1e-7 when the edit is the identity.
            kl.append(kl_ctx.clamp(min=0).cpu().numpy())
        return self._per_doc(np.concatenate(ce)), self._per_doc(np.concatenate(kl))

    def _evidence(self, num: np.ndarray, den: np.ndarray) -> Evidence:
        return Evidence("document", self._ids, "ratio", {"num": num, "den": den})

    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        dictionary = dictionary.to(ctx.device)
        ce, kl = self._run(ctx, dictionary)
        ev, seed = self._evidence, ctx.seed
        share = "KL(clean || spliced) / KL(clean || zero-ablated)"
        metrics = {
            "loss_recovered": Metric.of(ev(self._ce_zero - ce, self._ce_zero - self._ce_clean), True,
                                        "(CE_zero - CE_spliced) / (CE_zero - CE_clean)", seed),
            "loss_recovered_mean": Metric.of(ev(self._ce_mean - ce, self._ce_mean - self._ce_clean), True,
                                             "(CE_mean - CE_spliced) / (CE_mean - CE_clean)", seed),
            "kl": Metric.of(ev(kl, self._n), False, "KL(clean || spliced) next-token, nats per position", seed),
            # Scale-free, so it compares models whose zero-ablation gap differs (a random-init control's is tiny).
            "kl_share": (Metric.of(ev(kl, self._kl_zero), False, share, seed) if self._kl_zero.sum() > 0 else
                         Metric.without_interval(float("nan"), False, share, "zero ablation leaves the next-token "
                                                 "distribution unchanged (KL 0)", "document", len(self._ids))),
            "ce_spliced": Metric.of(ev(ce, self._n), False, "cross-entropy with the reconstruction spliced in", seed),
            "ce_increase": Metric.of(ev(ce - self._ce_clean, self._n), False, "CE_spliced - CE_clean", seed),
        }
        per_genre = {}
        for g in sorted(set(self._genre)):
            m = np.array([x == g for x in self._genre])
            per_genre[g] = {
                "documents": int(m.sum()),
                "loss_recovered": _ratio(self._ce_zero[m] - ce[m], self._ce_zero[m] - self._ce_clean[m]),
                "kl": _ratio(kl[m], self._n[m]),
            }
        details = {"ce_clean": self.ce_clean, "ce_zero": self.ce_zero, "ce_mean": self.ce_mean,
                   "kl_zero": self.kl_zero, "kl_mean": self.kl_mean,  # the scale of KL: an edit that erases the hook
                   "n_predictions": int(self._n.sum()), "n_contexts": len(self._idx),
                   "coverage": self._coverage, "per_genre": per_genre}
        return TaskOutput(metrics, details)


def _ce_per_context(logp: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
    """logp `[B, T-1, V]` (predictions for positions 1..T-1), tokens `[B, T]` -> CE sums `[B]` (float64)."""
    nll = -logp.gather(-1, tokens[:, 1:, None].to(logp.device)).squeeze(-1)
    return nll.double().sum(-1).cpu().numpy()


def _ratio(num: np.ndarray, den: np.ndarray) -> float:
    d = float(den.sum())
    return float(num.sum()) / d if d != 0 else float("nan")
