"""What every sparse autoencoder shares: its parameters, its dictionary interface and its training config.

    x' = x * input_scale                                   activations scaled so that E||x'||^2 = d_in
    pre = (x' - b_dec) @ W_enc.T + b_enc                   pre-activations            [..., d_dict]
    c   = activation(pre)                                  codes (the variant's part) [..., d_dict]
    x^  = (c @ W_dec + b_dec) / input_scale                reconstruction             [..., d_in]

A variant (one module each: `sae_relu`, `sae_topk`, ...) supplies its activation, which entries of a batch can
carry a gradient (`select`, see `methods.sparse`) and its loss terms beyond the reconstruction MSE. The shared
loop in `methods.trainer` does everything else, for one SAE or for a sweep of them on the same batches.

`pre` is computed as x' @ W_enc.T + (b_enc - W_enc @ b_dec): subtracting b_dec from the input first would make
autograd pay a B·d·m matmul for the gradient of b_dec; folding it into the bias makes that gradient a d·m one.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.dictionary import Dictionary
from bench.specs import fraction, non_negative, one_of, positive
from methods.base import Method, ProgressFn, TrainingData
from methods.phases import OFF, Laps
from methods.sparse import Codes, encode_selected, select_mask, select_topk


@dataclass
class TrainState:
    """What a variant may read during a training step."""

    step: int
    total_steps: int
    ramp: float  # sparsity-coefficient warm-up factor in [0, 1]
    dead: torch.Tensor  # [d_dict] bool: latents that have not fired for `dead_after_tokens`


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, what is minimised
    terms: dict[str, torch.Tensor]  # scalars for logging: mse and each variant term (unweighted)
    codes: Codes


class SAE(Dictionary):
    """Base of every SAE dictionary. `W_dec` rows are the directions (unit norm unless `decoder_norm="free"`)."""

    # Fraction of a batch's code entries above which dense matmuls beat the sparse path on a CPU (measured at
    # d=576, m=4608, B=4096: sparse products cost ~25x more per entry than a dense matmul's inner product).
    dense_above: float = 0.04

    def __init__(self, d_in: int, d_dict: int, tied: bool = False) -> None:
        super().__init__(d_in, d_dict)
        self.tied = bool(tied)
        self.W_dec = torch.nn.Parameter(torch.zeros(d_dict, d_in))
        self.W_enc = None if tied else torch.nn.Parameter(torch.zeros(d_dict, d_in))
        self.b_enc = torch.nn.Parameter(torch.zeros(d_dict))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.register_buffer("input_scale", torch.ones(()))

    # --- inference --------------------------------------------------------------------------------------
    @property
    def encoder_weight(self) -> torch.Tensor:
        return self.W_dec if self.W_enc is None else self.W_enc

    def encoder_bias(self) -> torch.Tensor:
        """`[d_dict]`: b_enc - W_enc @ b_dec, so that pre = x' @ W_enc.T + encoder_bias()."""
        return self.b_enc - self.encoder_weight @ self.b_dec

    def pre_activation(self, x_scaled: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x_scaled, self.encoder_weight, self.encoder_bias())

    @abc.abstractmethod
    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Inference codes from pre-activations, `[..., d_dict]` -> `[..., d_dict]`."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.activation(self.pre_activation(x * self.input_scale))

    def decode_scaled(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec + self.b_dec

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_scaled(codes) / self.input_scale

    @property
    def directions(self) -> torch.Tensor:
        return torch.nn.functional.normalize(self.W_dec.detach(), dim=-1)

    def config(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "d_dict": self.d_dict}

    # --- training ---------------------------------------------------------------------------------------
    def select(self, pre: torch.Tensor, state: TrainState) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Entries `(rows, cols)` of `pre` `[B, m]` that can carry a gradient this step; None: all (dense)."""
        return None

    def select_active(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The entries of `mask` `[B, m]`, or None (dense) when too many are set for the sparse path to pay."""
        if torch.count_nonzero(mask) > self.dense_above * mask.numel():  # (a bool .sum() copies to int64 first)
            return None
        return select_mask(mask)

    @abc.abstractmethod
    def train_activation(self, pre: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Codes for selected pre-activation values (`[B, m]` with cols `[m]`, or `[n]` with cols `[n]`)."""

    def extra_terms(self, x: torch.Tensor, pre: torch.Tensor, pre_codes: Codes, codes: Codes, recon: torch.Tensor,
                    state: TrainState, coeffs: dict[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The variant's loss beyond the MSE: (weighted sum, {name: unweighted value})."""
        return x.new_zeros(()), {}

    def recon_loss(self, x: torch.Tensor, codes: Codes) -> tuple[torch.Tensor, torch.Tensor]:
        """(MSE, reconstruction `[B, d]`); Matryoshka overrides it with its nested prefixes."""
        recon = codes.decode(self.W_dec) + self.b_dec
        return (recon - x).pow(2).mean(), recon

    def training_step(self, x_scaled: torch.Tensor, state: TrainState, coeffs: dict[str, float],
                      laps: Laps = OFF) -> StepOutput:
        """One forward pass on a batch `[B, d_in]` of scaled activations, with its loss (`laps`: time per phase)."""
        weight, bias = self.encoder_weight, self.encoder_bias()
        with torch.no_grad():
            pre = torch.nn.functional.linear(x_scaled, weight, bias)  # [B, m]
        laps.lap("encode")
        selected = self.select(pre, state)
        laps.lap("select")
        if selected is None:
            pre_codes = Codes(DenseEncode.apply(pre, x_scaled, weight, bias), torch.arange(self.d_dict,
                              device=pre.device), x_scaled.shape[0], self.d_dict)
        else:
            pre_codes = encode_selected(x_scaled, weight, bias, pre, *selected)
        codes = pre_codes.with_vals(self.train_activation(pre_codes.vals, pre_codes.cols))
        laps.lap("activate")
        mse, recon = self.recon_loss(x_scaled, codes)
        laps.lap("decode")
        extra, terms = self.extra_terms(x_scaled, pre, pre_codes, codes, recon, state, coeffs)
        laps.lap("aux")
        return StepOutput(mse + extra, {"mse": mse.detach(), **terms}, codes)

    def auxk_term(self, x: torch.Tensor, pre: torch.Tensor, recon: torch.Tensor, dead: torch.Tensor,
                  k_aux: int) -> torch.Tensor:
        """Gao et al. 2024's AuxK: the top-k_aux dead latents reconstruct the residual error x - x^ (detached).

        Zero when nothing is dead. Normalised like the MSE (mean over batch and dimensions).
        """
        dead_idx = dead.nonzero(as_tuple=True)[0]
        k = min(k_aux, len(dead_idx))
        if k == 0:
            return x.new_zeros(())
        with torch.no_grad():
            if k == len(dead_idx):  # every dead latent takes part: no ranking needed
                rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(k)
                cols = dead_idx.repeat(x.shape[0])
            else:
                rows, sub = select_topk(pre[:, dead_idx], k)
                cols = dead_idx[sub]
        aux = encode_selected(x, self.encoder_weight, self.encoder_bias(), pre, rows, cols)
        aux = aux.with_vals(torch.relu(aux.vals))
        residual = (x - recon).detach()
        return (aux.decode(self.W_dec) - residual).pow(2).mean()

    @torch.no_grad()
    def reset_latents(self, idx: torch.Tensor, directions: torch.Tensor, enc_norm: float) -> None:
        """Anthropic's 2023 resampling: latents `idx` restart at `directions` `[n, d_in]` (unit rows)."""
        self.W_dec[idx] = directions
        if self.W_enc is not None:
            self.W_enc[idx] = directions * enc_norm
        self.b_enc[idx] = 0.0


class AuxKSAE(SAE):
    """Base of the variants whose selection fixes the codes (TopK, BatchTopK, Matryoshka): relu on the selected
    pre-activations, AuxK against dead latents."""

    def train_activation(self, pre: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def extra_terms(self, x, pre, pre_codes, codes, recon, state, coeffs):
        if not coeffs.get("aux"):
            return x.new_zeros(()), {}
        aux = self.auxk_term(x, pre, recon, state.dead, coeffs["k_aux"])
        return coeffs["aux"] * aux, {"auxk": aux.detach()}


class DenseEncode(torch.autograd.Function):
    """pre `[B, m]` (computed without gradient) as a function of W_enc and bias: backward without recomputing."""

    @staticmethod
    def forward(ctx, pre, x, W_enc, bias):  # noqa: D102
        ctx.save_for_backward(x)
        return pre

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (x,) = ctx.saved_tensors
        grad_w = grad.T @ x if ctx.needs_input_grad[2] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[3] else None
        return None, None, grad_w, grad_b


DEAD_HANDLING = ("none", "resample", "auxk")


@dataclass
class SAEMethod(Method):
    """Hyper-parameters every SAE variant shares; a variant adds its own sparsity settings.

    `dict_ratio` sets the dictionary size (d_dict = dict_ratio * d_model). Training streams `epochs` passes over
    the train split in shuffled batches; the learning rate warms up linearly over `warmup_steps` (penalty
    coefficients ramp with it) and decays linearly to zero over the last `decay_fraction` of the steps.
    """

    dict_ratio: float = positive(4.0)
    lr: float = positive(3e-3)
    batch_size: int = positive(256)
    epochs: float = positive(2.0)
    warmup_steps: int = non_negative(50)
    decay_fraction: float = fraction(0.2)
    decoder_norm: str = one_of("unit", "unit", "free")  # "unit": rows renormalised every step; "free": left to Adam
    # "none" | "resample" (Anthropic 2023); the TopK family has "auxk" (Gao et al. 2024) instead of "resample"
    dead_latents: str = one_of("none", "none", "resample")
    dead_after_tokens: int = positive(50_000)  # a latent is dead after this many training tokens without firing
    resample_every: int = positive(500)  # steps between resamplings when dead_latents="resample"

    sparse: ClassVar[bool] = True

    @abc.abstractmethod
    def build(self, d_in: int, d_dict: int) -> SAE:
        """An untrained SAE of this variant."""

    def coefficients(self, ramp: float) -> dict[str, float]:
        """Penalty coefficients at this step (`ramp` in [0, 1] during warm-up)."""
        return {}

    def initialise(self, sae: SAE, sample: torch.Tensor, generator: torch.Generator) -> None:
        """Decoder rows random unit vectors, encoder their transpose, b_dec the scaled data mean."""
        with torch.no_grad():
            sae.W_dec.copy_(torch.nn.functional.normalize(
                torch.randn(sae.d_dict, sae.d_in, generator=generator, dtype=torch.float64).float(), dim=-1))
            if sae.W_enc is not None:
                sae.W_enc.copy_(sae.W_dec)
            sae.b_dec.copy_(sample.mean(0).float())

    def make(self, d_in: int, sample: torch.Tensor) -> SAE:
        """Build and initialise from a sample `[n, d_in]` of training activations."""
        m = max(1, round(self.dict_ratio * d_in))
        sae = self.build(d_in, m)
        scale = math.sqrt(d_in / sample.double().pow(2).sum(-1).mean().item())
        sae.input_scale.fill_(scale)
        self.initialise(sae, sample * scale, torch.Generator().manual_seed(self.seed))
        return sae

    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> SAE:
        from methods.trainer import train_saes

        return train_saes([self], train, progress)[0]


@dataclass
class TopKFamily(SAEMethod):
    """Shared by the variants that pick k latents per token (TopK, BatchTopK, Matryoshka): k and AuxK."""

    k: int = positive(32)
    k_aux: int = positive(256)  # Gao et al.: d_model / 2
    aux_coeff: float = non_negative(1 / 32)
    dead_latents: str = one_of("auxk", "none", "auxk")

    def coefficients(self, ramp: float) -> dict[str, float]:
        return {"aux": self.aux_coeff if self.dead_latents == "auxk" else 0.0, "k_aux": self.k_aux}
