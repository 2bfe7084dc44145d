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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from bench.dictionary import Dictionary
from tasks.base import Metric, Task, TaskContext, TaskOutput

Replace = Callable[[torch.Tensor], torch.Tensor]  # kept activations [n, d] -> replacement [n, d]


@dataclass
class LossRecovered(Task):
    n_contexts: int = 32
    batch_size: int = 8

    name = "loss_recovered"
    description = "cross-entropy with the reconstruction spliced in, against zero and mean ablation; KL to clean"
    needs_model = True

    def prepare(self, ctx: TaskContext) -> None:
        model = ctx.model
        tokens = torch.from_numpy(ctx.store.eval.tokens()[: self.n_contexts]).long()
        self._batches = list(tokens.split(self.batch_size))
        self._clean_logp: list[torch.Tensor] = []
        ce = 0.0
        for tb in self._batches:
            logp = F.log_softmax(model.logits(tb).float(), dim=-1)[:, :-1]
            self._clean_logp.append(logp)
            ce += _ce_sum(logp, tb)
        self._n = sum(tb[:, 1:].numel() for tb in self._batches)
        self.ce_clean = ce / self._n
        mean = ctx.store.train.kept_activations(min(ctx.store.train.n_kept, 100_000), seed=ctx.seed).mean(0)
        self.ce_zero, self.kl_zero = self._run(ctx, lambda x: torch.zeros_like(x))
        self.ce_mean, self.kl_mean = self._run(ctx, lambda x: mean.to(x).expand_as(x))

    def _run(self, ctx: TaskContext, replace: Replace) -> tuple[float, float]:
        """Mean CE and mean KL(clean || edited) with `replace` applied at the kept positions."""
        model, store = ctx.model, ctx.store
        ce = kl = 0.0
        for tb, clean_logp in zip(self._batches, self._clean_logp, strict=True):

            def edit(act: torch.Tensor, tb: torch.Tensor = tb) -> torch.Tensor:
                keep = store.exclusion.mask(tb.to(act.device), act, model.special_ids, store.reference_norm)
                out = act.clone()
                out[keep] = replace(act[keep]).to(act.dtype)
                return out

            logp = F.log_softmax(model.logits(tb, ctx.store.hook, edit).float(), dim=-1)[:, :-1]
            ce += _ce_sum(logp, tb)
            kl += F.kl_div(logp, clean_logp, log_target=True, reduction="sum").item()
        # KL >= 0; float rounding can leave ~-1e-7 when the edit is the identity.
        return ce / self._n, max(kl / self._n, 0.0)

    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        dictionary = dictionary.to(ctx.device)
        ce, kl = self._run(ctx, dictionary)
        metrics = {
            "loss_recovered": Metric(_recovered(self.ce_zero, ce, self.ce_clean), True,
                                     description="(CE_zero - CE_spliced) / (CE_zero - CE_clean)"),
            "loss_recovered_mean": Metric(_recovered(self.ce_mean, ce, self.ce_clean), True,
                                          description="(CE_mean - CE_spliced) / (CE_mean - CE_clean)"),
            "kl": Metric(kl, False, description="KL(clean || spliced) next-token, nats per position"),
            # Scale-free, so it compares models whose zero-ablation gap differs (a random-init control's is tiny).
            "kl_share": Metric(kl / self.kl_zero if self.kl_zero > 0 else float("nan"), False,
                               description="KL(clean || spliced) / KL(clean || zero-ablated)"),
            "ce_spliced": Metric(ce, False, description="cross-entropy with the reconstruction spliced in"),
            "ce_increase": Metric(ce - self.ce_clean, False, description="CE_spliced - CE_clean"),
        }
        details = {"ce_clean": self.ce_clean, "ce_zero": self.ce_zero, "ce_mean": self.ce_mean,
                   "kl_zero": self.kl_zero, "kl_mean": self.kl_mean,  # the scale of KL: an edit that erases the hook
                   "n_predictions": self._n, "n_contexts": sum(len(b) for b in self._batches)}
        return TaskOutput(metrics, details)


def _ce_sum(logp: torch.Tensor, tokens: torch.Tensor) -> float:
    """logp `[B, T-1, V]` (predictions for positions 1..T-1), tokens `[B, T]`."""
    return -logp.gather(-1, tokens[:, 1:, None].to(logp.device)).sum().item()


def _recovered(ce_ablated: float, ce_spliced: float, ce_clean: float) -> float:
    return (ce_ablated - ce_spliced) / (ce_ablated - ce_clean)
