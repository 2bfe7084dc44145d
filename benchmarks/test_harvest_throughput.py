"""Harvesting throughput against a bare forward pass to the same layer, measured in the same run.

Run: `pytest benchmarks --benchmark-enable` (or `python -m bench perf` for a table). The ratio, not the absolute
tokens/s, is the figure to track: these machines are shared and noisy.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch

from bench.corpus import corpus_fingerprint
from bench.harvest import HarvestSpec, harvest
from bench.models import model_fingerprint
from bench.store import ExclusionRule

HOOK = "blocks.12.hook_resid_post"
N_CTX, CTX_LEN, BATCH = 64, 128, 32


def _bare_rate(model, tokens: torch.Tensor, repeats: int = 3) -> float:
    hf = model.bridge.original_model
    body = copy.copy(hf.model)
    body.layers = hf.model.layers[:13]
    best = float("inf")
    with torch.inference_mode():
        for i in range(repeats + 1):
            start = time.perf_counter()
            for b in tokens.split(BATCH):
                body(b)
            if i:
                best = min(best, time.perf_counter() - start)
    return tokens.numel() / best


def test_harvest_vs_bare_forward(benchmark, model, docs):
    spec_args = dict(model=model.name, model_fingerprint=model_fingerprint(model.entry), hook=HOOK,
                     corpus_fingerprint=corpus_fingerprint(docs), ctx_len=CTX_LEN, train_contexts=N_CTX,
                     eval_contexts=BATCH, exclusion=ExclusionRule())
    n_tokens = (N_CTX + BATCH) * CTX_LEN
    tokens = torch.randint(100, 40_000, (N_CTX + BATCH, CTX_LEN), generator=torch.Generator().manual_seed(0))
    bare = _bare_rate(model, tokens)

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            harvest(HarvestSpec(**spec_args), docs, lambda: model, BATCH, root=Path(tmp))

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    rate = n_tokens / benchmark.stats.stats.min
    benchmark.extra_info.update({"harvest_tokens_per_s": rate, "bare_tokens_per_s": bare, "ratio": rate / bare})
    print(f"\nharvest {rate:,.0f} tok/s · bare forward to layer 12 {bare:,.0f} tok/s · ratio {rate / bare:.3f}")
