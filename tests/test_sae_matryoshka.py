"""`sae-matryoshka`: every nested prefix reconstructs on its own; the loss averages them."""

from __future__ import annotations

import pytest
import torch

from methods.sae_matryoshka import MatryoshkaSAE, SAEMatryoshka
from tests.sae_helpers import X, set_weights, short_fit, state


def test_prefix_losses_by_hand():
    sae = set_weights(MatryoshkaSAE(d_in=2, d_dict=3, k=2, n_prefixes=2), [0.0, 0.2, -0.5])
    assert sae.prefix_sizes == [1, 3]
    out = sae.training_step(X * 2.0, state(), {"aux": 0.0})
    # codes (1.5, 0, 2.0). Prefix {0}: 1.5 (1, 0) + (0.5, 0) = (2, 0) vs (2, 1) -> mse 0.5.
    # Whole dictionary: (3.2, 1.6) -> mse 0.9. Loss = mean = 0.7.
    assert torch.allclose(out.codes.to_dense(), torch.tensor([[1.5, 0.0, 2.0]]))
    assert out.terms["mse"].item() == pytest.approx(0.7)


def test_short_training_orders_the_prefixes(store):
    method = SAEMatryoshka(seed=0, dict_ratio=1.0, batch_size=128, epochs=8.0, k=8, n_prefixes=3,
                           warmup_steps=5)
    sae, l0 = short_fit(method, store)
    assert method.fit_info_["last_loss"] < 0.5 * method.fit_info_["first_loss"]
    assert 4 <= l0 <= 14
    # the first prefix must carry the most-used latents: it reconstructs alone, so it fires more per latent
    with torch.no_grad():
        codes = sae.encode(store.eval.kept_activations())
    freq = (codes != 0).float().mean(0)
    first = sae.prefix_sizes[0]
    assert freq[:first].mean() > freq[first:].mean()
