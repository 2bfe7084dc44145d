"""KL(p_clean || p_edited) against a clean run computed once.

Tasks compare many edited runs with one clean run. `F.kl_div(logp, clean_logp, log_target=True)` recomputes
exp(clean_logp) and the difference on every call; keeping the clean probabilities p and their sum_v p log p
leaves one product and one sum over the vocabulary per edited run:
    KL(p || q) = sum_v p log p - sum_v p log q.
Both sums are taken by the same code in the same precision, so an edit that changes nothing gives exactly 0.
"""

from __future__ import annotations

import torch


class CleanDistribution:
    """The clean next-token distributions `[..., V]`, given as log-probabilities (float32)."""

    def __init__(self, logp: torch.Tensor) -> None:
        self.p = logp.exp()
        self.neg_entropy = self._dot(logp)  # `[...]` float64: sum_v p log p

    def _dot(self, logp: torch.Tensor) -> torch.Tensor:
        return (self.p * logp).sum(-1).double()

    def kl(self, logp: torch.Tensor) -> torch.Tensor:
        """KL(p_clean || exp(logp)) per position, `[..., V]` -> `[...]` float64 (>= 0 up to rounding)."""
        return self.neg_entropy - self._dot(logp)
