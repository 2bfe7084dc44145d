"""`sae-jumprelu`: hand-computed forward pass, L0 loss and the straight-through threshold gradients."""

from __future__ import annotations

import pytest
import torch

from methods.sae_jumprelu import JumpReLUSAE, SAEJumpReLU
from tests.sae_helpers import X, assert_sparse_path_matches_dense, set_weights, short_fit, state


def _hand_sae() -> JumpReLUSAE:
    sae = set_weights(JumpReLUSAE(d_in=2, d_dict=3, bandwidth=0.5), [0.0, 0.2, -0.5])  # pre = (1.5, 1.2, 2.0)
    sae.log_threshold.data.copy_(torch.tensor([1.6, 1.0, 1.0]).log())
    return sae


def test_forward_loss_and_threshold_gradients_by_hand():
    sae = _hand_sae()
    # latent 0: 1.5 < θ 1.6 is cut; 1 and 2 pass
    assert torch.allclose(sae.encode(X), torch.tensor([[0.0, 1.2, 2.0]]))
    out = sae.training_step(X * 2.0, state(), {"l0": 0.1})
    # x^' = 1.2 (0, 1) + 2 (0.6, 0.8) + (0.5, 0) = (1.7, 2.8); mse = (0.09 + 3.24) / 2 = 1.665; L0 = 2
    assert out.terms["mse"].item() == pytest.approx(1.665)
    assert out.terms["l0_penalty"].item() == pytest.approx(2.0)
    assert out.loss.item() == pytest.approx(1.665 + 0.1 * 2)
    out.loss.backward()
    # dmse/dx^' = x^' - x' = (-0.3, 1.8), so dmse/dc = W_dec (-0.3, 1.8) = (-0.3, 1.8, 1.26).
    # Kernel K = 1/ε = 2 where |pre - θ| < ε/2 = 0.25: latents 0 (|-0.1|) and 1 (|0.2|), not 2 (|1.0|).
    # dL/dθ0 = -(θ0/ε)(dmse/dc0) - (1/ε)(0.1) = -(1.6 / 0.5)(-0.3) - 0.2 = 0.76
    # dL/dθ1 = -(1.0 / 0.5)(1.8) - 0.2 = -3.8;  dL/dθ2 = 0.   d/dlogθ = θ d/dθ.
    want = torch.tensor([1.6 * 0.76, 1.0 * -3.8, 0.0])
    assert torch.allclose(sae.log_threshold.grad, want, atol=1e-5)


def test_sparse_path_gives_the_dense_gradients():
    assert_sparse_path_matches_dense(_hand_sae, {"l0": 0.1}, ["W_enc", "W_dec", "b_enc", "log_threshold"])


def test_short_training_reaches_a_sparse_code(store):
    method = SAEJumpReLU(seed=0, dict_ratio=1.0, batch_size=128, epochs=8.0, warmup_steps=5)
    sae, l0 = short_fit(method, store)
    assert method.fit_info_["last_loss"] < 0.5 * method.fit_info_["first_loss"]
    assert 1 < l0 < sae.d_dict / 4
    # θ starts at threshold_init on every latent (by construction of `build`) and training moves it: compare θ with
    # θ_init (log θ with log θ_init would be the same), not θ (> 0) with log θ_init (< 0), which always differ
    init = method.build(sae.d_in, sae.d_dict).threshold
    assert torch.allclose(init, torch.full_like(init, method.threshold_init))
    moved = (sae.threshold - method.threshold_init).abs()
    assert (moved > 0.01).float().mean() > 0.5  # most latents' thresholds moved (median 0.15 here)
