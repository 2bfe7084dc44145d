"""`sae-matryoshka` (Bussmann et al. 2025, arXiv 2503.17547): nested dictionaries trained jointly.

The first m/2^(P-1), m/2^(P-2), ..., m/2, m latents (P = `n_prefixes`) must each reconstruct the input on their
own: the loss is the mean over prefixes of the MSE of the reconstruction from that prefix's codes alone (plus
AuxK). Early latents learn general features, later ones refine them, which reduces feature absorption. Codes
are chosen by BatchTopK over the whole dictionary, and inference uses its learned threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.specs import positive
from methods.sae import TopKFamily
from methods.sae_batchtopk import BatchTopKSAE


class MatryoshkaSAE(BatchTopKSAE):
    kind = "sae-matryoshka"

    def __init__(self, d_in: int, d_dict: int, k: int, n_prefixes: int) -> None:
        super().__init__(d_in, d_dict, k)
        self.n_prefixes = int(n_prefixes)

    @property
    def prefix_sizes(self) -> list[int]:
        return [max(1, self.d_dict >> (self.n_prefixes - 1 - i)) for i in range(self.n_prefixes)]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "n_prefixes": self.n_prefixes}

    def recon_loss(self, x: torch.Tensor, codes):
        # Each prefix's reconstruction is the previous one plus its new latents' part, so every code entry is
        # decoded (and differentiated) once, not once per prefix that holds it.
        losses, recon, lo = [], self.b_dec, 0
        for hi in self.prefix_sizes:
            if hi > lo:
                recon = recon + codes.columns(lo, hi).decode(self.W_dec[lo:hi])
            losses.append((recon - x).pow(2).mean())
            lo = hi  # sizes never decrease (repeated ones add nothing)
        return torch.stack(losses).mean(), recon


@dataclass
class SAEMatryoshka(TopKFamily):
    n_prefixes: int = positive(5)  # nested sizes m/16, m/8, m/4, m/2, m

    name = "sae-matryoshka"
    version = 2  # 2: each code entry decoded once (prefix reconstructions as running sums): other float rounding
    description = "sparse autoencoder, nested Matryoshka prefixes with BatchTopK (Bussmann et al. 2025)"

    def build(self, d_in: int, d_dict: int) -> MatryoshkaSAE:
        return MatryoshkaSAE(d_in, d_dict, self.k, self.n_prefixes)
