"""Shared pieces of the per-architecture SAE tests: one hand-set SAE geometry and a training state."""

from __future__ import annotations

import torch

from methods.sae import SAE, TrainState

# d_in = 2, d_dict = 3; x = (1, 0.5) with input_scale 2 gives x' = (2, 1) and x' - b_dec = (1.5, 1).
W_DEC = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
W_ENC = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # (x' - b_dec) @ W_ENC.T = (1.5, 1, 2.5)
B_DEC = torch.tensor([0.5, 0.0])
X = torch.tensor([[1.0, 0.5]])


def set_weights(sae: SAE, b_enc: list[float]) -> SAE:
    with torch.no_grad():
        sae.W_dec.copy_(W_DEC)
        if sae.W_enc is not None:
            sae.W_enc.copy_(W_ENC)
        sae.b_enc.copy_(torch.tensor(b_enc))
        sae.b_dec.copy_(B_DEC)
        sae.input_scale.fill_(2.0)
    return sae


def state(dead: list[bool] | None = None) -> TrainState:
    return TrainState(step=0, total_steps=1, ramp=1.0, dead=torch.tensor(dead or [False, False, False]))


def short_fit(method, store):
    """Train on the real test store; returns (sae, eval L0)."""
    sae = method.fit(store.train)
    with torch.no_grad():
        codes = sae.encode(store.eval.kept_activations())
    assert (codes >= 0).all()
    return sae, (codes != 0).float().sum(-1).mean().item()


def assert_sparse_path_matches_dense(make, coeffs: dict[str, float], params: list[str]) -> None:
    """The same batch through the sparse path and the dense one: equal gradients for every named parameter."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g) * 2
    grads = []
    for dense_above in (1.0, 0.0):  # 1.0: every batch is "sparse enough"; 0.0: always dense
        sae = make()
        sae.dense_above = dense_above
        sae.training_step(x, state(), coeffs).loss.backward()
        grads.append([getattr(sae, p).grad.clone() for p in params])
    for name, sparse, dense in zip(params, *grads, strict=True):
        assert torch.allclose(sparse, dense, atol=1e-5), name
