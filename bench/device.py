"""The device a run computes on: CPU by default, a CUDA GPU with `--device cuda`, batch sizes sized to its memory.

On the CPU nothing here changes a number: the configured batch sizes are used as they are. On a GPU the harvest
batch (a forward pass per context, independent of its neighbours) grows to fill half the free memory. An SAE's
`batch_size` is a hyper-parameter (it changes the optimisation, the resume key and the comparison with a CPU
run), so it is never changed behind the user's back: a batch that does not fit is a one-line error naming one
that does.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from bench.errors import BenchError

MAX_HARVEST_BATCH = 1024


def check_device(device: str, here: bool = True, cuda_available: Callable[[], bool] = torch.cuda.is_available) -> str:
    """`device` if it names one and (`here`) this process can compute on it; else a one-line error."""
    if device not in {"cpu", "cuda"} and not device.startswith("cuda:"):
        raise BenchError(f"unknown device {device!r}; use cpu or cuda")
    if here and device.startswith("cuda") and not cuda_available():
        raise BenchError("--device cuda was asked for but no CUDA device is visible here (torch "
                         f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu")
    return device


def set_threads(n: int) -> None:
    """Compute with `n` threads in torch and in the BLAS/OpenMP pools numpy and scikit-learn use (PCA, ICA,
    k-means): the thread count changes the order of floating-point sums, so equal numbers need equal counts."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(limits=n)


def free_memory(device: str) -> int | None:
    """Free bytes on a CUDA device (None on the CPU, where the configured sizes stand)."""
    if not device.startswith("cuda"):
        return None
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def scaled_batch(base: int, bytes_per_item: int, free_bytes: int | None, fraction: float = 0.5,
                 cap: int = MAX_HARVEST_BATCH) -> int:
    """`base` when `free_bytes` is None (CPU); else the largest power of two whose items take at most `fraction`
    of the free memory, between 1 and `cap` (never below `base` if `base` fits)."""
    if free_bytes is None:
        return base
    fits = max(1, int(free_bytes * fraction) // max(1, bytes_per_item))
    power = 1 << (fits.bit_length() - 1)
    return max(min(power, cap), min(base, fits))


def context_bytes(ctx_len: int, d_model: int, n_heads: int, d_mlp: int | None = None) -> int:
    """Peak activation memory of one context in a forward pass to one layer (fp32), with a 2x margin: the
    residual stream and its copies, one MLP's hidden state and one layer's attention scores."""
    d_mlp = d_mlp or 4 * d_model
    per_layer = ctx_len * (8 * d_model + 2 * d_mlp) + 2 * n_heads * ctx_len * ctx_len
    return 2 * 4 * per_layer


def harvest_batch(base: int, device: str, ctx_len: int, model) -> int:
    """Contexts per harvest forward pass: `base` on the CPU, scaled to the free memory of a GPU."""
    free = free_memory(device)
    if free is None:
        return base
    cfg = model.bridge.cfg
    return scaled_batch(base, context_bytes(ctx_len, cfg.d_model, cfg.n_heads, getattr(cfg, "d_mlp", None)), free)


def sae_step_bytes(batch: int, d_model: int, d_dict: int) -> int:
    """Memory of one SAE training step (fp32): weights, gradients and two Adam moments of encoder and decoder,
    plus pre-activations, codes and their gradients for the batch."""
    params = 2 * d_dict * d_model + d_dict + d_model
    return 4 * (4 * params + 4 * batch * d_dict + 4 * batch * d_model)


def check_sae_batch(methods: Sequence, d_model: int, free_bytes: int | None = None) -> None:
    """A one-line error if SAEs trained together at their `batch_size` would not fit in the GPU's free memory."""
    if not methods:
        return
    free = free_bytes if free_bytes is not None else free_memory(str(methods[0].device))
    if free is None:
        return
    batch = methods[0].batch_size
    sizes = [max(1, round(m.dict_ratio * d_model)) for m in methods]
    need = sum(sae_step_bytes(batch, d_model, m) for m in sizes)
    if need > 0.9 * free:
        per_item = max(1, need // batch)
        fits = scaled_batch(1, per_item, free, fraction=0.8, cap=batch)
        raise BenchError(f"SAEs {', '.join(m.name for m in methods)} need {need / 2**30:.1f} GiB per step at "
                         f"batch_size={batch} but the GPU has {free / 2**30:.1f} GiB free; pass a smaller batch, "
                         f"e.g. --methods '{methods[0].name}[batch_size={fits}]', or train fewer SAEs together")
