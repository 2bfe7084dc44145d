"""`sae-jumprelu` (Rajamanoharan et al. 2024, arXiv 2407.14435): a learned threshold per latent and an L0 penalty.

    c = pre * H(pre - θ),  θ = exp(log_threshold) > 0;   loss = MSE(x^', x') + l0_coeff * mean_batch sum_i H(pre_i - θ_i)

H has no useful derivative, so θ learns through straight-through pseudo-derivatives with a rectangle kernel
K(u) = 1{|u| < 1/2} of width ε (`bandwidth`):  ∂c/∂θ = -(θ/ε) K((pre-θ)/ε),  ∂H/∂θ = -(1/ε) K((pre-θ)/ε);
pre gets the ordinary derivative H(pre - θ) from c and none from the L0 term. Only entries above θ - ε/2 can
carry a gradient, so training runs on the sparse path once few latents fire.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from bench.specs import non_negative, positive
from methods.sae import SAE, SAEMethod


def _kernel(pre: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
    return ((pre - theta).abs() < bandwidth / 2).to(pre.dtype) / bandwidth


class JumpReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, bandwidth):  # noqa: D102
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        pre, theta = ctx.saved_tensors
        grad_pre = grad * (pre > theta).to(grad.dtype)
        grad_theta = -theta * _kernel(pre, theta, ctx.bandwidth) * grad
        return grad_pre, grad_theta, None


class StepFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, bandwidth):  # noqa: D102
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        pre, theta = ctx.saved_tensors
        return None, -_kernel(pre, theta, ctx.bandwidth) * grad, None


class JumpReLUSAE(SAE):
    kind = "sae-jumprelu"

    def __init__(self, d_in: int, d_dict: int, bandwidth: float) -> None:
        super().__init__(d_in, d_dict)
        self.bandwidth = float(bandwidth)
        self.log_threshold = torch.nn.Parameter(torch.zeros(d_dict))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        # relu is a no-op for a positive θ; it keeps codes non-negative for a loaded SAE whose θ is 0
        return torch.relu(pre) * (pre > self.threshold)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "bandwidth": self.bandwidth}

    def _theta(self, pre: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.threshold[cols].expand_as(pre)

    def select(self, pre, state):
        mask = pre > self.threshold.detach() - self.bandwidth / 2
        return self.select_active(mask)

    def train_activation(self, pre: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return JumpReLUFn.apply(pre, self._theta(pre, cols), self.bandwidth)

    def extra_terms(self, x, pre, pre_codes, codes, recon, state, coeffs):
        l0 = StepFn.apply(pre_codes.vals, self._theta(pre_codes.vals, pre_codes.cols), self.bandwidth).sum()
        l0 = l0 / codes.batch
        return coeffs["l0"] * l0, {"l0_penalty": l0.detach()}


@dataclass
class SAEJumpReLU(SAEMethod):
    l0_coeff: float = non_negative(1e-3)  # default preset: 5e-4 -> L0 71, 1e-3 -> L0 29, 2e-3 -> L0 15
    bandwidth: float = positive(0.05)  # ε, in units of the scaled activations (E||x'||^2 = d_model)
    threshold_init: float = positive(0.5)  # θ starts here (its log is learned)

    name = "sae-jumprelu"
    description = "sparse autoencoder, JumpReLU + L0 via straight-through estimators (Rajamanoharan et al. 2024)"

    def build(self, d_in: int, d_dict: int) -> JumpReLUSAE:
        sae = JumpReLUSAE(d_in, d_dict, self.bandwidth)
        sae.log_threshold.data.fill_(math.log(self.threshold_init))
        return sae

    def coefficients(self, ramp: float) -> dict[str, float]:
        return {"l0": self.l0_coeff * ramp}
