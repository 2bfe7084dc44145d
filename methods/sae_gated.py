"""`sae-gated` (Rajamanoharan et al. 2024, arXiv 2404.16014): whether a latent fires and how much, decided apart.

    π_gate = (x' - b_dec) @ W_enc.T + b_gate            (b_gate is `b_enc`)
    π_mag  = (x' - b_dec) @ (W_enc * exp(r_mag)).T + b_mag   (weights shared with the gate, rescaled per latent)
    c = H(π_gate) * relu(π_mag)
    loss = MSE(x^', x') + l1_coeff * mean_batch ||relu(π_gate)||_1 + MSE(x^'_frozen(relu(π_gate)), x')

The L1 penalty sits on the gate only, so it no longer shrinks the magnitudes (the shrinkage that ReLU SAEs
suffer). The auxiliary term decodes relu(π_gate) with a frozen (detached) copy of the decoder so that the gate
gets a reconstruction signal of its own; H passes no gradient. Every term is zero where π_gate <= 0, so training
runs on the sparse path once few gates open.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.specs import non_negative
from methods.sae import SAE, SAEMethod


class GatedSAE(SAE):
    kind = "sae-gated"

    def __init__(self, d_in: int, d_dict: int) -> None:
        super().__init__(d_in, d_dict)
        self.r_mag = torch.nn.Parameter(torch.zeros(d_dict))
        self.b_mag = torch.nn.Parameter(torch.zeros(d_dict))

    def magnitude(self, pre_gate: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return (pre_gate - self.b_enc[cols]) * self.r_mag[cols].exp() + self.b_mag[cols]

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        cols = torch.arange(self.d_dict, device=pre.device)
        return (pre > 0).to(pre.dtype) * torch.relu(self.magnitude(pre, cols))

    def select(self, pre, state):
        mask = pre > 0
        return self.select_active(mask)

    def train_activation(self, pre: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return (pre > 0).to(pre.dtype) * torch.relu(self.magnitude(pre, cols))

    def extra_terms(self, x, pre, pre_codes, codes, recon, state, coeffs):
        gate = torch.relu(pre_codes.vals)
        l1 = gate.sum() / codes.batch
        aux_recon = pre_codes.with_vals(gate).decode(self.W_dec.detach()) + self.b_dec.detach()
        aux = (aux_recon - x).pow(2).mean()
        return coeffs["l1"] * l1 + aux, {"l1": l1.detach(), "gate_aux": aux.detach()}

    @torch.no_grad()
    def reset_latents(self, idx, directions, enc_norm) -> None:
        super().reset_latents(idx, directions, enc_norm)
        self.r_mag[idx] = 0.0
        self.b_mag[idx] = 0.0


@dataclass
class SAEGated(SAEMethod):
    l1_coeff: float = non_negative(4e-3)  # on the gate; default preset: 2e-3 -> L0 113, 5e-3 -> L0 27, 1e-2 -> L0 8

    name = "sae-gated"
    description = "sparse autoencoder, gated encoder with auxiliary loss (Rajamanoharan et al. 2024)"

    def build(self, d_in: int, d_dict: int) -> GatedSAE:
        return GatedSAE(d_in, d_dict)

    def coefficients(self, ramp: float) -> dict[str, float]:
        return {"l1": self.l1_coeff * ramp}
