"""`reconstruction`: how well a dictionary reconstructs held-out activations, and how sparsely.

On the eval split's kept tokens (the exclusion rule already applied), with x `[n, d]` and x^ = decode(encode(x)):
    FVU    = sum ||x - x^||^2 / sum ||x - mean(x)||^2      (mean over this evaluation set; 1 - FVU = explained var.)
    MSE    = mean over tokens and dims of (x - x^)^2
    cosine = mean over tokens of cos(x, x^)
    L0     = mean over tokens of the number of non-zero codes
    dead   = fraction of codes never non-zero on the evaluation set

Unit: the document (tokens of one document are not independent). Every metric but `dead` is a ratio of
per-document sums (FVU: sum_doc err / sum_doc var, each document's var taken around the eval-set mean, so the
ratio of sums is exactly the FVU above) and gets a bootstrap interval over documents. `dead` is a union over the
whole split, not a statistic of units: no interval. Callers without documents (synthetic data) make every row its
own unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.dictionary import Dictionary
from bench.specs import positive
from bench.stats import Evidence
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.sampling import coverage, split_genres

DEAD_REASON = "a union over the whole evaluation set (a code is dead if no token fires it), not a statistic of units"


@dataclass
class ReconstructionStats:
    """Per-unit sums behind the metrics, accumulated over batches in float64 (any batch size gives the same
    answer). `n_units` units; `update` says which unit each row belongs to."""

    d_dict: int
    n_units: int

    def __post_init__(self) -> None:
        z = lambda: torch.zeros(self.n_units, dtype=torch.float64)
        self.n, self.sq_err, self.cos_sum, self.l0_sum, self.x_sq_sum = z(), z(), z(), z(), z()
        self.x_sum: torch.Tensor | None = None  # `[n_units, d]`
        self.ever_active = torch.zeros(self.d_dict, dtype=torch.bool)
        self.has_codes = False

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor | None, unit: torch.Tensor) -> None:
        """x, x_hat: `[b, d]`; codes: `[b, d_dict]` or None when only the reconstruction is scored; unit: `[b]`
        long, each row's unit in 0..n_units-1."""
        x, x_hat, unit = x.double().cpu(), x_hat.double().cpu(), unit.long().cpu()
        self.n.index_add_(0, unit, torch.ones(len(unit), dtype=torch.float64))
        self.sq_err.index_add_(0, unit, (x - x_hat).pow(2).sum(-1))
        self.cos_sum.index_add_(0, unit, torch.nn.functional.cosine_similarity(x, x_hat, dim=-1, eps=1e-12))
        if self.x_sum is None:
            self.x_sum = torch.zeros(self.n_units, x.shape[1], dtype=torch.float64)
        self.x_sum.index_add_(0, unit, x)
        self.x_sq_sum.index_add_(0, unit, x.pow(2).sum(-1))
        if codes is not None:
            self.has_codes = True
            active = (codes != 0).cpu()
            self.l0_sum.index_add_(0, unit, active.sum(-1).double())
            self.ever_active |= active.any(0)

    def unit_variance(self) -> torch.Tensor:
        """`[n_units]`: sum over each unit's rows of ||x - mean||^2, mean over ALL rows (the evaluation set), so the
        units' variances add up to the total: sum ||x||^2 - 2 mean . sum x + n ||mean||^2."""
        assert self.x_sum is not None
        mean = self.x_sum.sum(0) / self.n.sum()
        return self.x_sq_sum - 2 * self.x_sum @ mean + self.n * mean.pow(2).sum()

    def metrics(self, ids: list[str], unit: str = "document", sources: tuple[str, ...] = ("eval sample",),
                seed: int = 0, names: tuple[str, ...] | None = None) -> dict[str, Metric]:
        """`ids` `[n_units]` name the units (the same for every dictionary scored on these data: that pairs them).
        Units without rows are left out. `names`: only these metrics (each interval is a bootstrap: not free)."""
        assert self.x_sum is not None, "no rows"
        present = (self.n > 0).numpy()
        kept = [u for u, p in zip(ids, present, strict=True) if p]
        d = self.x_sum.shape[1]

        def ratio(num: torch.Tensor, den: torch.Tensor) -> Evidence:
            return Evidence(unit, kept, "ratio", {"num": num.numpy()[present], "den": den.numpy()[present]},
                            sources=sources)

        build = {
            "fvu": lambda: Metric.of(ratio(self.sq_err, self.unit_variance()), False,
                                     "fraction of variance unexplained", seed),
            "mse": lambda: Metric.of(ratio(self.sq_err, self.n * d), False, "mean squared error per dimension", seed),
            "cosine": lambda: Metric.of(ratio(self.cos_sum, self.n), True, "mean cosine(x, x_hat)", seed),
        }
        if self.has_codes:
            build["l0"] = lambda: Metric.of(ratio(self.l0_sum, self.n), False, "mean non-zero codes per token", seed)
            build["dead_fraction"] = lambda: Metric.without_interval(
                1.0 - self.ever_active.double().mean().item(), False, "codes never active on eval", DEAD_REASON,
                unit=unit, n=len(kept))
        return {k: f() for k, f in build.items() if names is None or k in names}


def reconstruction_metrics(dictionary: Dictionary, x: torch.Tensor, batch_size: int = 4096,
                           unit_of: np.ndarray | None = None, ids: list[str] | None = None, unit: str = "document",
                           sources: tuple[str, ...] = ("eval sample",), seed: int = 0,
                           names: tuple[str, ...] | None = None) -> dict[str, Metric]:
    """Score `dictionary` on activations x `[n, d_in]`. `unit_of` `[n]` gives each row's unit (index into `ids`);
    None: every row is its own unit, named by its row index (synthetic samples). `names`: only these metrics."""
    if unit_of is None:
        unit_of = np.arange(x.shape[0])
        ids = [str(i) for i in range(x.shape[0])] if ids is None else ids
    assert ids is not None and len(unit_of) == x.shape[0]
    units = torch.as_tensor(np.asarray(unit_of), dtype=torch.long)
    stats = ReconstructionStats(dictionary.d_dict, len(ids))
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            codes = dictionary.encode(xb)
            stats.update(xb, dictionary.decode(codes), codes, units[i : i + batch_size])
    return stats.metrics(ids, unit, sources, seed, names)


@dataclass
class Reconstruction(Task):
    max_tokens: int | None = positive(None)  # None: every kept token of the eval split; else a seeded subsample
    batch_size: int = positive(4096)

    name = "reconstruction"
    description = "FVU, MSE, cosine, L0 and dead fraction on held-out activations"

    def prepare(self, ctx: TaskContext) -> None:
        split = ctx.store.eval
        self._x = split.kept_activations(self.max_tokens, seed=ctx.seed)
        rows = split.kept_context(self.max_tokens, seed=ctx.seed)  # `[n]`: each row's context, same rows as _x
        self._doc = split.doc()[rows]  # `[n]`: each row's document, the unit
        # Unit ids from the data alone (document ids), so two dictionaries are paired document by document.
        self._ids = [doc_id for doc_id, _ in split.documents]
        self._coverage = coverage(split.doc(), split_genres(split), np.unique(rows))

    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        x = self._x.to(ctx.device)
        metrics = reconstruction_metrics(dictionary.to(ctx.device), x, self.batch_size, self._doc, self._ids,
                                         seed=ctx.seed)
        return TaskOutput(metrics, {"n_tokens": int(x.shape[0]), "coverage": self._coverage})
