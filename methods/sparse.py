"""Sparse code batches for SAE training: only the entries that can carry a gradient are ever touched.

An SAE's codes for a batch form a `[B, m]` matrix of which a few entries per row are non-zero (k for TopK, the
active latents for ReLU / JumpReLU / Gated once training has settled). Decoding them densely costs 2·B·d·m
FLOPs forward and 4·B·d·m backward; over only the n selected entries it costs O(n·d). `Codes` holds either form
behind one interface, so every variant writes its activation and loss once:

- dense: `vals` is `[B, m]`, `cols` is `arange(m)` (broadcasts as the latent index of each column);
- sparse: `vals`, `rows`, `cols` are `[n]`, rows sorted ascending (CSR order), every other entry is zero.

Gradients reach the encoder only at the selected entries, which is exact whenever the selection covers every
entry whose activation has a non-zero (pseudo-)derivative: top-k (the rest are zeroed), ReLU's positives,
JumpReLU's positives plus its straight-through band.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Codes:
    vals: torch.Tensor  # dense [B, m] | sparse [n]
    cols: torch.Tensor  # dense [m]    | sparse [n], latent index of each value
    batch: int
    d_dict: int
    rows: torch.Tensor | None = None  # sparse [n], sorted; None when dense

    @property
    def is_sparse(self) -> bool:
        return self.rows is not None

    def with_vals(self, vals: torch.Tensor) -> "Codes":
        return Codes(vals, self.cols, self.batch, self.d_dict, self.rows)

    def decode(self, W_dec: torch.Tensor) -> torch.Tensor:
        """codes @ W_dec without the bias: `[B, d]`."""
        if self.rows is None:
            return self.vals @ W_dec
        return SparseDecode.apply(self.vals, self.rows, self.cols, W_dec, self.batch)

    def activity(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(`[m]` bool: latents with a non-zero code somewhere in the batch, mean non-zero codes per row),
        from one pass over the values."""
        with torch.no_grad():
            nonzero = self.vals != 0
            l0 = torch.count_nonzero(nonzero) / self.batch
            if self.rows is None:
                return nonzero.any(0), l0
            return torch.bincount(self.cols[nonzero], minlength=self.d_dict) > 0, l0

    def to_dense(self) -> torch.Tensor:
        if self.rows is None:
            return self.vals
        return torch.zeros(self.batch, self.d_dict, dtype=self.vals.dtype, device=self.vals.device).index_put(
            (self.rows, self.cols), self.vals)

    def columns(self, lo: int, hi: int) -> "Codes":
        """The entries of latents lo..hi-1 alone, as codes of a `[hi - lo]` dictionary (decode them with
        `W_dec[lo:hi]`): a slice when dense, the sub-list (rows still sorted) when sparse."""
        if self.rows is None:
            return Codes(self.vals[:, lo:hi], self.cols[lo:hi] - lo, self.batch, hi - lo)
        idx = ((self.cols >= lo) & (self.cols < hi)).nonzero().squeeze(1)
        return Codes(self.vals[idx], self.cols[idx] - lo, self.batch, hi - lo, self.rows[idx])


def _crow(rows: torch.Tensor, batch: int) -> torch.Tensor:
    counts = torch.bincount(rows, minlength=batch)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class SparseEncode(torch.autograd.Function):
    """Selected pre-activations `pre[rows, cols]` as a function of (W_enc `[m, d]`, bias `[m]`), for fixed x.

    Forward takes the values already computed (from the dense no-grad pass); backward scatters their gradient
    into W_enc and bias: grad_W_enc = S.T @ x with S the `[B, m]` sparse gradient, O(n·d).
    """

    @staticmethod
    def forward(ctx, values, x, W_enc, bias, rows, cols):  # noqa: D102
        ctx.save_for_backward(x, rows, cols)
        ctx.d_dict = W_enc.shape[0]
        return values

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, rows, cols = ctx.saved_tensors
        m = ctx.d_dict
        grad_w = grad_b = None
        if ctx.needs_input_grad[2]:
            st = torch.sparse_coo_tensor(torch.stack([cols, rows]), grad, (m, x.shape[0]), is_coalesced=False,
                                         check_invariants=False)
            grad_w = torch.sparse.mm(st, x)
        if ctx.needs_input_grad[3]:
            grad_b = torch.zeros(m, dtype=grad.dtype, device=grad.device).index_add_(0, cols, grad)
        return None, None, grad_w, grad_b, None, None


class SparseDecode(torch.autograd.Function):
    """`[B, d]` = S @ W_dec for S sparse with values `vals` at (rows, cols); backward is O(n·d) too.

    grad_vals is a sampled dense-dense product (only the selected entries of grad_out @ W_dec.T), grad_W_dec is
    S.T @ grad_out.
    """

    @staticmethod
    def forward(ctx, vals, rows, cols, W_dec, batch):  # noqa: D102
        crow = _crow(rows, batch)
        out = F.embedding_bag(cols, W_dec, crow[:-1], mode="sum", per_sample_weights=vals)
        ctx.save_for_backward(vals, rows, cols, crow, W_dec)
        ctx.batch = batch
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        vals, rows, cols, crow, W_dec = ctx.saved_tensors
        grad_vals = grad_w = None
        grad_out = grad_out.contiguous()
        if ctx.needs_input_grad[0]:
            with warnings.catch_warnings():  # CSR's "beta" notice: only sampled_addmm uses it, which is stable
                warnings.simplefilter("ignore")
                pattern = torch.sparse_csr_tensor(crow, cols, torch.zeros_like(vals), (ctx.batch, W_dec.shape[0]),
                                                  check_invariants=False)
            grad_vals = torch.sparse.sampled_addmm(pattern, grad_out, W_dec.T, beta=0.0).values()
        if ctx.needs_input_grad[3]:
            st = torch.sparse_coo_tensor(torch.stack([cols, rows]), vals, (W_dec.shape[0], ctx.batch),
                                         is_coalesced=False, check_invariants=False)
            grad_w = torch.sparse.mm(st, grad_out)
        return grad_vals, None, None, grad_w, None


def encode_selected(x: torch.Tensor, W_enc: torch.Tensor, bias: torch.Tensor, pre: torch.Tensor,
                    rows: torch.Tensor, cols: torch.Tensor) -> Codes:
    """Pre-activation values at the selected entries, differentiable w.r.t. W_enc and bias.

    x `[B, d]`; W_enc `[m, d]`; bias `[m]` (may depend on other parameters); pre `[B, m]` = x @ W_enc.T + bias
    computed without gradient; rows, cols `[n]` with rows sorted.
    """
    vals = SparseEncode.apply(pre[rows, cols], x, W_enc, bias, rows, cols)
    return Codes(vals, cols, x.shape[0], W_enc.shape[0], rows)


def select_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, m]` bool -> (rows, cols) of its True entries in row-major (CSR) order."""
    rows, cols = mask.nonzero(as_tuple=True)
    return rows, cols


def select_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k largest entries of `[B, m]` -> (rows, cols), cols ascending within a row."""
    idx = pre.topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values
    rows = torch.arange(pre.shape[0], device=pre.device).repeat_interleave(k)
    return rows, idx.flatten()


def batch_threshold(acts: torch.Tensor, k_total: int) -> torch.Tensor:
    """The k_total-th largest entry of `[B, m]` (a 0-d tensor), without sorting all B·m of them.

    The union of every row's top-k (k = k_total / B, rounded up) has at least k_total entries, so the answer is at
    least its minimum; only the entries above that bound compete in a final top-k (typically ~2·k_total of them).
    """
    flat = acts.flatten()
    k_total = max(1, min(k_total, flat.numel()))
    per_row = min(acts.shape[1], -(-k_total // acts.shape[0]))
    bound = acts.topk(per_row, dim=-1, sorted=False).values.min()
    candidates = flat[flat >= bound]
    return candidates.topk(k_total, sorted=False).values.min()
