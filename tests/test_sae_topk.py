"""`sae-topk`: hand-computed forward pass, loss with AuxK, and a short real training run at its k."""

from __future__ import annotations

import pytest
import torch

from methods.sae_topk import SAETopK, TopKSAE
from tests.sae_helpers import X, set_weights, short_fit, state


def _hand_sae(k: int = 2) -> TopKSAE:
    # pre = (1.5, 1, 2.5) + b_enc = (1.5, 1.2, 2.0): the top 2 are latents 2 and 0, latent 1 is dropped
    return set_weights(TopKSAE(d_in=2, d_dict=3, k=k), [0.0, 0.2, -0.5])


def test_forward_by_hand():
    sae = _hand_sae()
    codes = sae.encode(X)
    assert torch.allclose(codes, torch.tensor([[1.5, 0.0, 2.0]]))
    # x^' = 1.5 (1, 0) + 2 (0.6, 0.8) + (0.5, 0) = (3.2, 1.6); x^ = (1.6, 0.8)
    assert torch.allclose(sae.decode(codes), torch.tensor([[1.6, 0.8]]))
    assert (sae.encode(-10 * X) == 0).all()  # negative pre-activations never fire, even among the top k


def test_loss_with_auxk_by_hand():
    sae = _hand_sae()
    # mse = ((3.2 - 2)^2 + (1.6 - 1)^2) / 2 = 0.9
    out = sae.training_step(X * 2.0, state(), {"aux": 0.5, "k_aux": 1})
    assert out.terms["mse"].item() == pytest.approx(0.9)
    assert out.loss.item() == pytest.approx(0.9)  # nothing dead: no AuxK
    # latent 1 dead: it alone (pre 1.2) reconstructs the residual e = (2, 1) - (3.2, 1.6) = (-1.2, -0.6):
    # e^ = 1.2 (0, 1); AuxK = ((0 + 1.2)^2 + (1.2 + 0.6)^2) / 2 = 2.34; loss = 0.9 + 0.5 * 2.34 = 2.07
    out = sae.training_step(X * 2.0, state([False, True, False]), {"aux": 0.5, "k_aux": 4})
    assert out.terms["auxk"].item() == pytest.approx(2.34)
    assert out.loss.item() == pytest.approx(2.07)
    out.loss.backward()
    assert sae.W_enc.grad[1].abs().sum() > 0  # the dead latent's encoder learns from AuxK
    assert sae.W_dec.grad[1].abs().sum() > 0


def test_short_training_reaches_k(store):
    method = SAETopK(seed=0, dict_ratio=1.0, batch_size=128, epochs=8.0, k=8, warmup_steps=5)
    sae, l0 = short_fit(method, store)
    assert method.fit_info_["last_loss"] < 0.5 * method.fit_info_["first_loss"]
    assert 6 <= l0 <= 8  # exactly k, less only where fewer than k pre-activations are positive
