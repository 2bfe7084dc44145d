"""`reconstruction`: how well a dictionary reconstructs held-out activations, and how sparsely.

On the eval split's kept tokens (the exclusion rule already applied), with x `[n, d]` and x^ = decode(encode(x)):
    FVU    = sum ||x - x^||^2 / sum ||x - mean(x)||^2      (mean over this evaluation set; 1 - FVU = explained var.)
    MSE    = mean over tokens and dims of (x - x^)^2
    cosine = mean over tokens of cos(x, x^)
    L0     = mean over tokens of the number of non-zero codes
    dead   = fraction of codes never non-zero on the evaluation set
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.dictionary import Dictionary
from tasks.base import Metric, Task, TaskContext, TaskOutput


@dataclass
class ReconstructionStats:
    """Accumulates the sums behind the metrics over batches (float64), so any batch size gives the same answer."""

    d_dict: int
    n: int = 0
    sq_err: float = 0.0
    cos_sum: float = 0.0
    l0_sum: float = 0.0

    def __post_init__(self) -> None:
        self.x_sum: torch.Tensor | None = None
        self.x_sq_sum = 0.0
        self.ever_active = torch.zeros(self.d_dict, dtype=torch.bool)

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor | None) -> None:
        """x, x_hat: `[b, d]`; codes: `[b, d_dict]` or None when only the reconstruction is scored."""
        x, x_hat = x.double(), x_hat.double()
        self.n += x.shape[0]
        self.sq_err += (x - x_hat).pow(2).sum().item()
        self.cos_sum += torch.nn.functional.cosine_similarity(x, x_hat, dim=-1, eps=1e-12).sum().item()
        s = x.sum(0)
        self.x_sum = s if self.x_sum is None else self.x_sum + s
        self.x_sq_sum += x.pow(2).sum().item()
        if codes is not None:
            active = codes != 0
            self.l0_sum += active.sum().item()
            self.ever_active |= active.any(0).cpu()

    @property
    def total_variance(self) -> float:
        """sum ||x - mean||^2 = sum ||x||^2 - n ||mean||^2."""
        assert self.x_sum is not None
        return self.x_sq_sum - self.x_sum.pow(2).sum().item() / self.n

    def metrics(self) -> dict[str, Metric]:
        fvu = self.sq_err / self.total_variance
        d = self.x_sum.numel() if self.x_sum is not None else 1
        return {
            "fvu": Metric(fvu, False, description="fraction of variance unexplained"),
            "mse": Metric(self.sq_err / (self.n * d), False, description="mean squared error per dimension"),
            "cosine": Metric(self.cos_sum / self.n, True, description="mean cosine(x, x_hat)"),
            "l0": Metric(self.l0_sum / self.n, False, description="mean non-zero codes per token"),
            "dead_fraction": Metric(
                1.0 - self.ever_active.double().mean().item(), False, description="codes never active on eval"
            ),
        }


def reconstruction_metrics(dictionary: Dictionary, x: torch.Tensor, batch_size: int = 4096) -> dict[str, Metric]:
    """Score `dictionary` on activations x `[n, d_in]`."""
    stats = ReconstructionStats(dictionary.d_dict)
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            codes = dictionary.encode(xb)
            stats.update(xb, dictionary.decode(codes), codes)
    return stats.metrics()


@dataclass
class Reconstruction(Task):
    max_tokens: int | None = None  # None: every kept token of the eval split
    batch_size: int = 4096

    name = "reconstruction"
    description = "FVU, MSE, cosine, L0 and dead fraction on held-out activations"

    def prepare(self, ctx: TaskContext) -> None:
        self._x = ctx.store.eval.kept_activations(self.max_tokens, seed=ctx.seed)

    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        x = self._x.to(ctx.device)
        metrics = reconstruction_metrics(dictionary.to(ctx.device), x, self.batch_size)
        return TaskOutput(metrics, {"n_tokens": int(x.shape[0])})
