"""`sae-batchtopk`: the batch's k·B largest activations in training, a learned threshold at inference."""

from __future__ import annotations

import pytest
import torch

from methods.sae_batchtopk import BatchTopKSAE, SAEBatchTopK
from tests.sae_helpers import X, set_weights, short_fit, state


def test_batch_selection_and_threshold_by_hand():
    sae = set_weights(BatchTopKSAE(d_in=2, d_dict=3, k=1), [0.0, 0.2, -0.5])
    # token 1: x' = (2, 1)  -> pre = (1.5, 1.2, 2.0); token 2: x' = (0, 0) -> pre = (-0.5, 0.2, -1.0)
    x = torch.cat([X * 2.0, torch.zeros(1, 2)])
    out = sae.training_step(x, state(), {"aux": 0.0})
    # k·B = 2 entries for the whole batch: both from token 1 (2.0 and 1.5); token 2 gets none
    assert torch.allclose(out.codes.to_dense(), torch.tensor([[1.5, 0.0, 2.0], [0.0, 0.0, 0.0]]))
    # errors: token 1 (3.2, 1.6) vs (2, 1) -> 1.8; token 2 b_dec = (0.5, 0) vs 0 -> 0.25; mse = 2.05 / 4
    assert out.terms["mse"].item() == pytest.approx(2.05 / 4)
    # the threshold starts at the smallest kept activation, 1.5; inference keeps codes strictly above it
    assert sae.threshold.item() == pytest.approx(1.5)
    assert torch.allclose(sae.encode(X), torch.tensor([[0.0, 0.0, 2.0]]))
    # then it moves as an exponential average of each batch's smallest kept activation
    sae.training_step(torch.cat([X * 2.0, X * 2.0]), state(), {"aux": 0.0})  # keeps 2.0, 2.0: smallest 2.0
    assert sae.threshold.item() == pytest.approx(0.99 * 1.5 + 0.01 * 2.0)


def test_short_training_reaches_k_on_average(store):
    method = SAEBatchTopK(seed=0, dict_ratio=1.0, batch_size=128, epochs=8.0, k=8, warmup_steps=5)
    sae, l0 = short_fit(method, store)
    assert method.fit_info_["last_loss"] < 0.5 * method.fit_info_["first_loss"]
    assert method.fit_info_["last_l0"] == pytest.approx(8, abs=0.5)  # training: k on average, exactly
    assert 4 <= l0 <= 14  # inference with the learned threshold: near k
