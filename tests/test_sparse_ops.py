"""The sparse training path must give the same values and gradients as dense autograd."""

from __future__ import annotations

import torch

from methods.sparse import Codes, batch_threshold, encode_selected, select_mask, select_topk


def _problem(seed: int = 0, B: int = 7, d: int = 5, m: int = 11):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=g, dtype=torch.float64)
    W_enc = torch.randn(m, d, generator=g, dtype=torch.float64, requires_grad=True)
    W_dec = torch.randn(m, d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(m, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(B, d, generator=g, dtype=torch.float64)
    return x, W_enc, W_dec, b, target


def _grads(loss, *params):
    return torch.autograd.grad(loss, params)


def test_sparse_encode_decode_matches_dense_autograd():
    x, W_enc, W_dec, b, target = _problem()
    pre_dense = x @ W_enc.T + b
    mask = pre_dense.detach() > 0.3
    dense_codes = torch.relu(pre_dense) * mask
    dense_loss = ((dense_codes @ W_dec) - target).pow(2).sum() + dense_codes.sum()
    expected = _grads(dense_loss, W_enc, W_dec, b)

    with torch.no_grad():
        pre = x @ W_enc.T + b
    codes = encode_selected(x, W_enc, b, pre, *select_mask(mask))
    codes = codes.with_vals(torch.relu(codes.vals))
    assert torch.allclose(codes.to_dense(), dense_codes.detach())
    sparse_loss = (codes.decode(W_dec) - target).pow(2).sum() + codes.vals.sum()
    assert torch.allclose(sparse_loss, dense_loss)
    for got, want in zip(_grads(sparse_loss, W_enc, W_dec, b), expected, strict=True):
        assert torch.allclose(got, want)


def test_topk_selection_and_empty_rows():
    pre = torch.tensor([[0.1, 3.0, 2.0, -1.0], [5.0, 0.0, 0.0, 4.0]])
    rows, cols = select_topk(pre, 2)
    assert rows.tolist() == [0, 0, 1, 1]
    assert cols.tolist() == [1, 2, 0, 3]  # ascending within a row
    # a row with no selected entry decodes to zero
    rows, cols = select_mask(torch.tensor([[False, True, False, False], [False, False, False, False]]))
    codes = Codes(torch.tensor([2.0]), cols, 2, 4, rows)
    out = codes.decode(torch.eye(4))
    assert out.tolist() == [[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


def test_batch_threshold_is_the_exact_kth_largest():
    g = torch.Generator().manual_seed(1)
    for B, m, k in [(16, 40, 3), (5, 9, 1), (32, 64, 10)]:
        acts = torch.relu(torch.randn(B, m, generator=g))
        acts[0] *= 10  # one rich row holds many of the batch's largest values
        want = acts.flatten().topk(k * B).values.min()
        assert batch_threshold(acts, k * B) == want
