"""`sae-topk` (Gao et al. 2024, arXiv 2406.04093): each token keeps its k largest pre-activations.

    c = relu(TopK_k(pre));  loss = MSE(x^', x')  +  aux_coeff * AuxK

AuxK: the k_aux largest pre-activations among dead latents (no firing for `dead_after_tokens`) reconstruct the
residual error x' - x^' (see `SAE.auxk_term`), which keeps latents alive without resampling. The encoder starts
as the decoder's transpose (the shared initialisation). Training is always on the sparse path: only the k
selected entries per token (plus the AuxK ones) are decoded and differentiated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.dictionary import topk_codes
from methods.sae import AuxKSAE, TopKFamily
from methods.sparse import select_topk


class TopKSAE(AuxKSAE):
    kind = "sae-topk"

    def __init__(self, d_in: int, d_dict: int, k: int) -> None:
        super().__init__(d_in, d_dict)
        self.k = int(k)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(topk_codes(pre, self.k))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "k": self.k}

    def select(self, pre, state):
        return select_topk(pre, min(self.k, self.d_dict))



@dataclass
class SAETopK(TopKFamily):
    name = "sae-topk"
    description = "sparse autoencoder, TopK activation + AuxK (Gao et al. 2024)"

    def build(self, d_in: int, d_dict: int) -> TopKSAE:
        return TopKSAE(d_in, d_dict, self.k)
