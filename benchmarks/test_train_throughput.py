"""SAE training throughput at d=576, m=4608 (8x), batch 4096, fp32, 2 threads, with MFU against this run's matmuls.

    MFU = steps/s × 12·B·d·m FLOPs ÷ matmul FLOP/s

Run: `pytest benchmarks --benchmark-enable` (or `python -m bench perf --train [--saelens-python PY]` for a table
with SAELens side by side). Ratios, not absolute figures, are what to track on a shared machine.
"""

from __future__ import annotations

import pytest
import torch

import methods
from bench.train_perf import matmul_flops, peak_extra_mib
from methods.trainer import SAETraining

D, M, B = 576, 4608, 4096


@pytest.mark.parametrize("spec", ["sae-relu", "sae-topk", "sae-batchtopk", "sae-jumprelu", "sae-gated",
                                  "sae-matryoshka"])
def test_sae_training_step(benchmark, spec):
    torch.set_num_threads(2)
    params = {"dict_ratio": M / D, "batch_size": B}
    method = methods.build_method(spec, params)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(B, D, generator=g) for _ in range(2)]
    training = SAETraining(method, method.make(D, batches[0]), total=10**9)
    state = {"step": 1000}

    def step() -> None:
        training.step(batches[state["step"] % 2], state["step"])
        state["step"] += 1

    step()
    peak = peak_extra_mib(step)
    flops = matmul_flops(B, D, M)
    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    rate = 1 / benchmark.stats.stats.mean
    mfu = rate * 12 * B * D * M / flops
    benchmark.extra_info.update({"tokens_per_s": rate * B, "mfu": mfu, "matmul_gflops": flops / 1e9,
                                 "peak_extra_mib": peak, "formula": "steps/s x 12*B*d*m / matmul FLOP/s"})
    print(f"\n{spec}: {rate * B:,.0f} tok/s · MFU {mfu:.0%} (matmul {flops / 1e9:.0f} GFLOP/s) · "
          f"peak extra {peak:.0f} MiB")
