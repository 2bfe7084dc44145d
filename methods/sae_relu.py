"""`sae-relu`: the paper's sparse autoencoder (Cunningham et al. 2023): ReLU encoder, unit-norm decoder rows, L1.

    c = relu(pre);  loss = MSE(x^', x')  +  l1_coeff * mean over the batch of ||c||_1

(notation of `methods.sae`; the MSE is a mean over batch and dimensions of the scaled activations). Decoder rows
are kept at unit norm, so the L1 penalty cannot be dodged by shrinking codes and growing decoder rows.
`tied=True` uses W_enc = W_dec as in the paper's residual-stream dictionaries; with `decoder_bias=False` it is
the paper's exact tied form (c = relu(M x + b), x^ = M.T c).

Training is exact on a sparse path once few codes fire: ReLU's gradient is zero wherever a code is zero, so
only the positive entries (selected per step, see `methods.sparse`) are decoded and differentiated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.specs import non_negative
from methods.sae import SAE, SAEMethod, TrainState
from methods.sparse import Codes


class SparseAutoencoder(SAE):
    kind = "sae"

    def __init__(self, d_in: int, d_dict: int, tied: bool = False, decoder_bias: bool = True) -> None:
        super().__init__(d_in, d_dict, tied=tied)
        self.decoder_bias = bool(decoder_bias)
        self.b_dec.requires_grad_(self.decoder_bias)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "tied": self.tied, "decoder_bias": self.decoder_bias}

    def select(self, pre: torch.Tensor, state: TrainState):
        return self.select_active(pre > 0)

    def train_activation(self, pre: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def extra_terms(self, x, pre, pre_codes: Codes, codes: Codes, recon, state, coeffs):
        l1 = codes.vals.sum() / codes.batch  # codes are relu outputs: |c| = c, and abs would cost two passes
        return coeffs["l1"] * l1, {"l1": l1.detach()}


@dataclass
class SAEReLU(SAEMethod):
    # alpha; activations are scaled to E||x||^2 = d_model, so it transfers across models. Default preset
    # (SmolLM2 layer 12, 4x dictionary): 2e-3 -> L0 47, 2.5e-3 -> L0 35, 3e-3 -> L0 27.
    l1_coeff: float = non_negative(2.5e-3)
    tied: bool = False
    decoder_bias: bool = True

    name = "sae-relu"
    description = "sparse autoencoder, ReLU + L1, unit-norm decoder (Cunningham et al. 2023)"

    def build(self, d_in: int, d_dict: int) -> SparseAutoencoder:
        return SparseAutoencoder(d_in, d_dict, tied=self.tied, decoder_bias=self.decoder_bias)

    def initialise(self, sae, sample, generator) -> None:
        super().initialise(sae, sample, generator)
        if not self.decoder_bias:
            sae.b_dec.data.zero_()

    def coefficients(self, ramp: float) -> dict[str, float]:
        return {"l1": self.l1_coeff * ramp}
