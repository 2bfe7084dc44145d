"""`sae-gated`: the gate decides which latents fire, the magnitude path how much; hand-computed loss."""

from __future__ import annotations

import math

import pytest
import torch

from methods.sae_gated import GatedSAE, SAEGated
from tests.sae_helpers import X, assert_sparse_path_matches_dense, set_weights, short_fit, state


def _hand_sae() -> GatedSAE:
    sae = set_weights(GatedSAE(d_in=2, d_dict=3), [0.0, -1.5, -0.5])  # π_gate = (1.5, -0.5, 2.0)
    sae.r_mag.data.copy_(torch.tensor([0.0, 0.0, math.log(2.0)]))
    sae.b_mag.data.copy_(torch.tensor([0.5, 0.0, -1.0]))
    return sae


def test_forward_and_loss_by_hand():
    sae = _hand_sae()
    # π_mag = (1.5, 1, 2.5) * exp(r_mag) + b_mag = (2.0, 1.0, 4.0); gate open for 0 and 2 -> c = (2, 0, 4)
    assert torch.allclose(sae.encode(X), torch.tensor([[2.0, 0.0, 4.0]]))
    out = sae.training_step(X * 2.0, state(), {"l1": 0.1})
    # x^' = 2 (1, 0) + 4 (0.6, 0.8) + (0.5, 0) = (4.9, 3.2): mse = (2.9^2 + 2.2^2) / 2 = 6.625
    assert out.terms["mse"].item() == pytest.approx(6.625)
    # L1 of relu(π_gate) = 1.5 + 2.0; aux decodes (1.5, 0, 2.0) with the frozen decoder: (3.2, 1.6) -> 0.9
    assert out.terms["l1"].item() == pytest.approx(3.5)
    assert out.terms["gate_aux"].item() == pytest.approx(0.9)
    assert out.loss.item() == pytest.approx(6.625 + 0.35 + 0.9)


def test_sparse_path_gives_the_dense_gradients():
    assert_sparse_path_matches_dense(_hand_sae, {"l1": 0.1}, ["W_enc", "W_dec", "b_enc", "b_dec", "r_mag", "b_mag"])


def test_short_training_reaches_a_sparse_code(store):
    method = SAEGated(seed=0, dict_ratio=1.0, batch_size=128, epochs=8.0, warmup_steps=5)
    sae, l0 = short_fit(method, store)
    assert method.fit_info_["last_loss"] < 0.5 * method.fit_info_["first_loss"]
    assert 1 < l0 < sae.d_dict / 4
