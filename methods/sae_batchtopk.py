"""`sae-batchtopk` (Bussmann et al. 2024, arXiv 2412.06410): the k·B largest activations of a whole batch.

Training keeps the k·B largest of relu(pre) over the batch of B tokens, so the number of codes per token varies
around k (rich tokens get more). Inference cannot see a batch: it keeps codes above a threshold θ, the running
mean (EMA) of the smallest activation kept during training. Loss: MSE + aux_coeff * AuxK, as for TopK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from methods.sae import AuxKSAE, TopKFamily
from methods.sparse import batch_threshold, select_mask

THRESHOLD_DECAY = 0.99


class BatchTopKSAE(AuxKSAE):
    kind = "sae-batchtopk"

    def __init__(self, d_in: int, d_dict: int, k: int) -> None:
        super().__init__(d_in, d_dict)
        self.k = int(k)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre) * (pre > self.threshold)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "k": self.k}

    @torch.no_grad()
    def select(self, pre, state):
        acts = torch.relu(pre)
        cut = batch_threshold(acts, self.k * pre.shape[0])
        mask = (acts >= cut) & (acts > 0)
        smallest = acts[mask].min() if mask.any() else cut
        if int(self.threshold_updates) == 0:
            self.threshold.copy_(smallest)
        else:
            self.threshold.mul_(THRESHOLD_DECAY).add_((1 - THRESHOLD_DECAY) * smallest)
        self.threshold_updates += 1
        return select_mask(mask)



@dataclass
class SAEBatchTopK(TopKFamily):
    name = "sae-batchtopk"
    description = "sparse autoencoder, BatchTopK with a learned inference threshold (Bussmann et al. 2024)"

    def build(self, d_in: int, d_dict: int) -> BatchTopKSAE:
        return BatchTopKSAE(d_in, d_dict, self.k)
