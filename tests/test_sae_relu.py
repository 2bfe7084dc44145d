"""`sae-relu`: forward pass and loss on hand-computed tensors, then a short real training run."""

from __future__ import annotations

import pytest
import torch

from methods.sae_relu import SAEReLU, SparseAutoencoder
from tests.sae_helpers import X, assert_sparse_path_matches_dense, set_weights, short_fit, state


def _hand_sae(tied: bool = False, decoder_bias: bool = True) -> SparseAutoencoder:
    sae = set_weights(SparseAutoencoder(d_in=2, d_dict=3, tied=tied, decoder_bias=decoder_bias), [0.0, -1.0, -0.5])
    if not decoder_bias:
        sae.b_dec.data.zero_()
    return sae


def test_untied_forward_by_hand():
    sae = _hand_sae()
    # pre = (1.5, 1, 2.5) + b_enc = (1.5, 0, 2.0) -> relu -> c = (1.5, 0, 2.0)
    codes = sae.encode(X)
    assert torch.allclose(codes, torch.tensor([[1.5, 0.0, 2.0]]))
    # x^' = 1.5 (1, 0) + 2 (0.6, 0.8) + b_dec = (3.2, 1.6); x^ = x^' / 2 = (1.6, 0.8)
    assert torch.allclose(sae.decode(codes), torch.tensor([[1.6, 0.8]]))
    # loss on scaled data: mse = ((3.2-2)^2 + (1.6-1)^2) / 2 = 0.9; l1 = 3.5; 0.9 + 0.1 * 3.5 = 1.25
    out = sae.training_step(X * 2.0, state(), {"l1": 0.1})
    assert out.terms["mse"].item() == pytest.approx(0.9)
    assert out.terms["l1"].item() == pytest.approx(3.5)
    assert out.loss.item() == pytest.approx(1.25)


def test_tied_without_decoder_bias_is_the_papers_form():
    sae = _hand_sae(tied=True, decoder_bias=False)
    # x' = (2, 1); pre = x' W_dec.T + b_enc = (2, 1, 2.0) + (0, -1, -0.5) = (2, 0, 1.5)
    codes = sae.encode(X)
    assert torch.allclose(codes, torch.tensor([[2.0, 0.0, 1.5]]))
    # x^' = 2 (1, 0) + 1.5 (0.6, 0.8) = (2.9, 1.2); x^ = (1.45, 0.6)
    assert torch.allclose(sae.decode(codes), torch.tensor([[1.45, 0.6]]))


def test_sparse_path_gives_the_dense_gradients():
    assert_sparse_path_matches_dense(_hand_sae, {"l1": 0.1}, ["W_enc", "W_dec", "b_enc", "b_dec"])


def test_short_training_on_real_activations_lowers_the_loss(store):
    method = SAEReLU(seed=0, dict_ratio=1.0, batch_size=128, epochs=8.0, l1_coeff=3e-3, warmup_steps=5)
    sae, l0 = short_fit(method, store)
    info = method.fit_info_
    assert info["last_loss"] < 0.5 * info["first_loss"]
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(sae.d_dict), atol=1e-5)
    assert 1 < l0 < sae.d_dict / 2  # sparse, not dead
