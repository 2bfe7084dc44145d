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


@pytest.mark.parametrize("sparse", [True, False])
def test_running_prefix_sums_equal_each_prefix_decoded_alone(sparse):
    """The loss and its gradients equal the definition (each prefix's codes decoded on their own), sparse or dense,
    with repeated prefix sizes (a small dictionary)."""
    from methods.sparse import Codes

    g = torch.Generator().manual_seed(0)
    sae = MatryoshkaSAE(d_in=6, d_dict=20, k=4, n_prefixes=6)  # sizes [1, 1, 2, 5, 10, 20]
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(20, 6, generator=g))
        sae.b_dec.copy_(torch.randn(6, generator=g))
    x = torch.randn(5, 6, generator=g)
    dense = torch.relu(torch.randn(5, 20, generator=g)) * (torch.rand(5, 20, generator=g) < 0.4)
    rows, cols = dense.nonzero(as_tuple=True)

    def codes(vals):
        return Codes(vals[rows, cols], cols, 5, 20, rows) if sparse else Codes(vals, torch.arange(20), 5, 20)

    vals = dense.clone().requires_grad_(True)
    loss, recon = sae.recon_loss(x, codes(vals))
    loss.backward()
    got = (loss.item(), recon.detach(), vals.grad.clone(), sae.W_dec.grad.clone(), sae.b_dec.grad.clone())
    sae.zero_grad()
    vals = dense.clone().requires_grad_(True)
    want = torch.stack([((vals[:, :s] @ sae.W_dec[:s] + sae.b_dec - x) ** 2).mean() for s in sae.prefix_sizes]).mean()
    want.backward()
    assert sae.prefix_sizes == [1, 1, 2, 5, 10, 20]
    assert got[0] == pytest.approx(want.item(), rel=1e-6)
    assert torch.allclose(got[1], dense @ sae.W_dec + sae.b_dec, atol=1e-5)
    mask = dense != 0 if sparse else torch.ones_like(dense, dtype=torch.bool)  # sparse: gradients at entries only
    assert torch.allclose(got[2][mask], vals.grad[mask], atol=1e-6)
    assert torch.allclose(got[3], sae.W_dec.grad, atol=1e-6) and torch.allclose(got[4], sae.b_dec.grad, atol=1e-6)
