"""`toy_superposition`: recover ground-truth features planted in synthetic data (Sharkey et al. 2022).

Data: n ground-truth unit directions G `[n_features, d]` (Gaussian, normalised); each sample activates feature i
with probability p_i proportional to decay^i (scaled so that on average `mean_active` are on), with a coefficient
drawn from Uniform(0, 1); x = c @ G. With `correlated=True` the on/off pattern comes from a Gaussian copula with a
random correlation matrix. More features than dimensions: superposition.

The task asks the method that made the dictionary to fit again, with the same settings, on the synthetic data
(`ctx.refit`); it never learns which method that is. Metrics on the refitted dictionary:
    mmcs                = mean over ground-truth features g of max over directions d of cos(g, d)
    recovered_fraction  = fraction of ground-truth features with that max cosine above `threshold` (0.9)
    fvu, l0, dead_fraction on held-out synthetic samples.
Intervals: MMCS and recovered_fraction are means over ground-truth features (unit: the ground-truth feature,
source "ground-truth features": which features were planted); fvu and l0 are ratios of per-sample sums over the
held-out samples (unit: a block of i.i.d. samples, 100 blocks, the same samples for every method; source
"synthetic sample"). Neither covers the refit's own randomness (training sample, initialisation): that takes seeds.
dead_fraction is a union over the samples: no interval.
A dictionary with L distinct lines (directions up to sign) can recover at most L features when no two features
are within cosine 0.62 of each other or of each other's negation (checked): details carry that bound, which is
what caps PCA and ICA (d lines) below 1 when n_features > d.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from bench.dictionary import Dictionary
from bench.errors import BenchError
from bench.seeds import stream
from bench.specs import check_fields, fraction, non_negative, param, positive
from bench.stats import Evidence
from bench.store import ArraySplit
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.reconstruction import reconstruction_metrics

N_BLOCKS = 100  # units for the held-out synthetic samples


@dataclass(frozen=True)
class ToyData:
    d: int = positive(256)
    n_features: int = positive(512)
    mean_active: float = positive(5.0)
    decay: float = param(0.99, gt=0, le=1)
    correlated: bool = False
    seed: int = non_negative(0)

    def __post_init__(self) -> None:
        check_fields(self)

    def features(self) -> torch.Tensor:
        """Ground truth `[n_features, d]`, unit rows.

        Drawn from a stream of its own (`stream(seed, "features")`): a method seeded with the run's seed that
        initialises from `torch.randn` must not start on the answer.
        """
        g = torch.Generator().manual_seed(stream(self.seed, "features"))
        return torch.nn.functional.normalize(torch.randn(self.n_features, self.d, generator=g), dim=-1)

    def probabilities(self) -> torch.Tensor:
        p = self.decay ** torch.arange(self.n_features, dtype=torch.float64)
        return (p * self.mean_active / p.sum()).clamp(max=1.0)

    def _copula_factor(self) -> torch.Tensor:
        """Cholesky factor of a random correlation matrix (random PSD covariance, rescaled to unit diagonal)."""
        g = torch.Generator().manual_seed(stream(self.seed, "copula"))
        a = torch.randn(self.n_features, self.n_features // 4, generator=g, dtype=torch.float64)
        cov = a @ a.T + torch.eye(self.n_features, dtype=torch.float64)
        s = cov.diagonal().rsqrt()
        return torch.linalg.cholesky(cov * s[:, None] * s[None, :])

    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x `[n, d]`, coefficients `[n, n_features]`)."""
        g = torch.Generator().manual_seed(stream(seed, "sample"))
        p = self.probabilities()
        if self.correlated:
            z = torch.randn(n, self.n_features, generator=g, dtype=torch.float64) @ self._copula_factor().T
            active = 0.5 * (1 + torch.erf(z / 2**0.5)) < p  # uniform marginals through the normal CDF
        else:
            active = torch.rand(n, self.n_features, generator=g, dtype=torch.float64) < p
        coeffs = torch.rand(n, self.n_features, generator=g) * active
        return coeffs @ self.features(), coeffs


def max_cosines(directions: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """For each ground-truth row of `truth` `[n, d]`, its max cosine with any row of `directions` `[m, d]`."""
    dirs = torch.nn.functional.normalize(directions.double(), dim=-1)
    return (torch.nn.functional.normalize(truth.double(), dim=-1) @ dirs.T).max(dim=1).values


def mmcs(directions: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean max cosine similarity of the ground truth to a dictionary."""
    return max_cosines(directions, truth).mean().item()


def distinct_lines(directions: torch.Tensor, tol: float = 1e-3) -> int:
    """Number of directions that differ up to sign (a direction and its negation are one line)."""
    dirs = torch.nn.functional.normalize(directions.double(), dim=-1)
    dirs = dirs[dirs.norm(dim=-1) > 0]
    dup = (dirs @ dirs.T).abs() > 1 - tol
    return int((~torch.tril(dup, diagonal=-1).any(dim=1)).sum())


# (train samples, eval samples). "paper": the published scale of Sharkey et al. / the paper's replication
# (20 k steps of batch 256 there; here 1 M samples, which the method sees for its own number of epochs).
SCALES = {"smoke": (20_000, 4_000), "fast": (60_000, 10_000), "paper": (1_000_000, 20_000)}


@dataclass
class ToySuperposition(Task):
    data: ToyData = field(default_factory=ToyData)  # its seed is replaced by the run's seed
    scale: str = param("fast", choices=tuple(SCALES))  # sample counts, unless n_train / n_eval are given
    n_train: int | None = positive(None)
    n_eval: int | None = positive(None)
    correlated: bool = False  # Gaussian-copula correlated features instead of independent ones
    threshold: float = fraction(0.9)

    name = "toy_superposition"
    description = "fit each method on synthetic data with planted features; MMCS and fraction recovered"
    refits = True
    topk_rows = False  # the method is refitted on synthetic data: a real-data top-k variant has no meaning there
    depends_on_model = False  # synthetic data only: a control model (--control) would score exactly the same

    def prepare(self, ctx: TaskContext) -> None:
        n_train, n_eval = SCALES[self.scale]
        self._data = replace(self.data, seed=ctx.seed, correlated=self.correlated or self.data.correlated)
        self._truth = self._data.features()
        self._train = ArraySplit(self._data.sample(self.n_train or n_train, ctx.seed + 101)[0])
        self._eval = self._data.sample(self.n_eval or n_eval, ctx.seed + 202)[0]
        self._max_pair_cos = (self._truth @ self._truth.T).fill_diagonal_(0).abs().max().item()

    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        if ctx.refit is None:
            raise BenchError("toy_superposition needs a method to refit; run it through `python -m bench run`")
        fitted = ctx.refit(self._train)
        with torch.inference_mode():
            best = max_cosines(fitted.directions, self._truth)
            # The held-out samples are i.i.d., so blocks of them are units too: 100 blocks give the same statistic
            # and interval as one unit per sample, in a result file 1/100 the size. Ids by block (the same samples
            # for every method).
            n = self._eval.shape[0]
            blocks = np.arange(n) * min(N_BLOCKS, n) // n
            rec = reconstruction_metrics(fitted, self._eval, unit_of=blocks,
                                         ids=[f"block-{b}" for b in range(min(N_BLOCKS, n))], unit="block of samples",
                                         sources=("synthetic sample",), seed=ctx.seed,
                                         names=("fvu", "l0", "dead_fraction"))
        lines = distinct_lines(fitted.directions)
        bound = min(1.0, lines / self._data.n_features) if self._max_pair_cos < 2 * self.threshold**2 - 1 else 1.0
        ids = [str(i) for i in range(self._data.n_features)]  # ground-truth features, the same for every method

        def per_feature(x: torch.Tensor) -> Evidence:
            return Evidence("ground-truth feature", ids, "mean", {"x": x.numpy()}, sources=("ground-truth features",))

        metrics = {
            "mmcs": Metric.of(per_feature(best), True, "mean max cosine of ground truth to the dictionary", ctx.seed),
            "recovered_fraction": Metric.of(per_feature((best > self.threshold).double()), True,
                                            f"ground-truth features with max cosine > {self.threshold}", ctx.seed),
            "fvu": rec["fvu"],
            "l0": rec["l0"],
            "dead_fraction": rec["dead_fraction"],
        }
        details = {
            "data": asdict(self._data),
            "n_directions": fitted.d_dict,
            "distinct_lines": lines,
            "recovery_bound": bound,
            "max_pairwise_cos_ground_truth": self._max_pair_cos,
            "max_cos_per_feature": [round(v, 4) for v in best.tolist()],
        }
        return TaskOutput(metrics, details)
