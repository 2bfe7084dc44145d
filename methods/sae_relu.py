"""`sae-relu`: the paper's sparse autoencoder (Cunningham et al. 2023): ReLU encoder, unit-norm decoder rows, L1.

    x' = x * input_scale                     (activations scaled so that E||x'||^2 = d_in)
    c  = relu((x' - b_dec) @ W_enc.T + b_enc)       codes          [..., d_dict]
    x^ = (c @ W_dec + b_dec) / input_scale          reconstruction [..., d_in]
    loss = mean over batch and dims of (x^' - x')^2  +  l1_coeff * mean over batch of ||c||_1

Decoder rows are kept at unit norm (renormalised after every step), so the L1 penalty cannot be dodged by
shrinking codes and growing decoder rows. `tied=True` uses W_enc = W_dec as in the paper's residual-stream
dictionaries; `decoder_bias=False` with `tied=True` is the paper's exact tied form (c = relu(M x + b), x^ = M.T c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from bench.dictionary import Dictionary
from methods.base import Method, ProgressFn, TrainingData


class SparseAutoencoder(Dictionary):
    """A ReLU SAE as a dictionary; `W_dec` rows are unit norm, so `directions` is `W_dec` itself."""

    kind = "sae"

    def __init__(self, d_in: int, d_dict: int, tied: bool = False, decoder_bias: bool = True) -> None:
        super().__init__(d_in, d_dict)
        self.tied = bool(tied)
        self.decoder_bias = bool(decoder_bias)
        self.W_dec = torch.nn.Parameter(torch.zeros(d_dict, d_in))
        self.W_enc = None if tied else torch.nn.Parameter(torch.zeros(d_dict, d_in))
        self.b_enc = torch.nn.Parameter(torch.zeros(d_dict))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in), requires_grad=decoder_bias)
        self.register_buffer("input_scale", torch.ones(()))

    @property
    def encoder_weight(self) -> torch.Tensor:
        return self.W_dec if self.W_enc is None else self.W_enc

    def pre_activation(self, x_scaled: torch.Tensor) -> torch.Tensor:
        return (x_scaled - self.b_dec) @ self.encoder_weight.T + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return torch.relu(self.pre_activation(x * self.input_scale))

    def decode_scaled(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec + self.b_dec

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_scaled(codes) / self.input_scale

    @property
    def directions(self) -> torch.Tensor:
        return torch.nn.functional.normalize(self.W_dec.detach(), dim=-1)

    def config(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "d_dict": self.d_dict, "tied": self.tied, "decoder_bias": self.decoder_bias}

    def training_loss(self, x_scaled: torch.Tensor, l1_coeff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_scaled `[B, d_in]` (already multiplied by input_scale) -> (loss, mse, l1), each a scalar."""
        codes = torch.relu(self.pre_activation(x_scaled))
        mse = (self.decode_scaled(codes) - x_scaled).pow(2).mean()
        l1 = codes.abs().sum(-1).mean()
        return mse + l1_coeff * l1, mse, l1

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.data = torch.nn.functional.normalize(self.W_dec.data, dim=-1)


@dataclass
class SAEReLU(Method):
    dict_ratio: float = 4.0  # dictionary size / d_model (the paper's residual dictionaries: R = 2)
    # alpha; activations are scaled to E||x||^2 = d_model, so it transfers across models. 2e-3 gives L0 ~ 20-60
    # on the default preset (measured on SmolLM2 layer 12: 1.5e-3 -> L0 53, 3e-3 -> L0 21).
    l1_coeff: float = 2e-3
    lr: float = 3e-3  # few steps on a CPU budget: small batches and a larger lr beat batch 1024 at lr 1e-3
    batch_size: int = 256
    epochs: float = 2.0
    tied: bool = False
    decoder_bias: bool = True
    warmup_steps: int = 50  # L1 coefficient ramps up linearly: fewer features die early

    name = "sae-relu"
    description = "sparse autoencoder, ReLU + L1, unit-norm decoder (Cunningham et al. 2023)"
    sparse = True

    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> SparseAutoencoder:
        torch.manual_seed(self.seed)
        d = train.d_model
        m = max(1, round(self.dict_ratio * d))
        sample = train.kept_activations(min(train.n_kept, 20_000), seed=self.seed).double()
        scale = math.sqrt(d / sample.pow(2).sum(-1).mean().item())

        sae = SparseAutoencoder(d, m, tied=self.tied, decoder_bias=self.decoder_bias)
        g = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=-1))
            if sae.W_enc is not None:
                sae.W_enc.copy_(sae.W_dec)  # encoder starts as the decoder's transpose
            if self.decoder_bias:
                sae.b_dec.copy_((sample.mean(0) * scale).float())
            sae.input_scale.fill_(scale)
        sae.to(self.device)

        params = [p for p in sae.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr)
        total = max(1, int(train.n_kept * self.epochs) // self.batch_size)
        losses = []
        for step, batch in enumerate(train.batches(self.batch_size, seed=self.seed, epochs=self.epochs)):
            ramp = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
            loss, mse, l1 = sae.training_loss(batch.to(self.device) * scale, self.l1_coeff * ramp)
            losses.append(mse.item() + self.l1_coeff * l1.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sae.normalise_decoder()
            if progress is not None:
                progress(step + 1, total)
        self.fit_info_ = {"steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1],
                          "last_mse": mse.item(), "last_l1": l1.item(), "input_scale": scale, "d_dict": m}
        return sae.cpu().eval()
