"""Harvesting throughput against a bare forward pass to the same layer, measured in the same run.

Run: `pytest benchmarks --benchmark-enable` (or `python -m bench perf` for a table). The ratio, not the absolute
tokens/s, is the figure to track: these machines are shared and noisy.
"""

from __future__ import annotations

import torch

from bench.perf import bare_forward, best_seconds, full_harvest

LAYER, N_CTX, CTX_LEN, BATCH = 12, 64, 128, 32


def test_harvest_vs_bare_forward(benchmark, model, docs):
    tokens = torch.randint(100, 40_000, (N_CTX, CTX_LEN), generator=torch.Generator().manual_seed(0))
    bare = tokens.numel() / best_seconds(bare_forward(model, tokens, LAYER, BATCH))
    run, n_tokens = full_harvest(model, docs, f"blocks.{LAYER}.hook_resid_post", N_CTX, CTX_LEN, BATCH)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    rate = n_tokens / benchmark.stats.stats.min
    benchmark.extra_info.update({"harvest_tokens_per_s": rate, "bare_tokens_per_s": bare, "ratio": rate / bare})
    print(f"\nharvest {rate:,.0f} tok/s · bare forward to layer {LAYER} {bare:,.0f} tok/s · ratio {rate / bare:.3f}")
