"""`python -m bench perf`: harvesting throughput as a ratio against a bare forward pass to the same layer.

Both are measured in the same process on the same tokens, so the ratio holds on a shared, noisy machine.
    bare     plain transformers model cut after the hooked layer (no hooks, nothing stored)
    bridge   TransformerBridge.run_with_cache(stop_at_layer=L+1) (what harvesting calls)
    harvest  the full harvest: tokenise, forward, exclusion mask, write shards, checksums
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bench.corpus import corpus_fingerprint, load_corpus
from bench.harvest import HarvestSpec, harvest
from bench.models import load_model, model_fingerprint
from bench.store import ExclusionRule


def _best_rate(fn, n_tokens: int, repeats: int = 3) -> float:
    """Tokens/s of the fastest of `repeats` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n_tokens / best


def harvest_throughput(model_name: str, layer: int | None, n_tokens: int, batch: int, console: Console) -> dict:
    model = load_model(model_name)
    layer = model.entry.default_layer if layer is None else layer
    hook = f"blocks.{layer}.hook_resid_post"
    ctx_len = 128
    n_ctx = max(batch, n_tokens // ctx_len)
    docs = load_corpus()
    tokens = torch.tensor([model.tokenize(d.text)[:ctx_len] for d in docs if len(d.text) > 2000][:n_ctx])
    n = tokens.numel()

    hf = model.bridge.original_model
    body = copy.copy(hf.model)
    body.layers = hf.model.layers[: layer + 1]

    @torch.inference_mode()
    def bare() -> None:
        for b in tokens.split(batch):
            body(b)

    def bridge() -> None:
        for b in tokens.split(batch):
            model.activations(b, hook)

    def full_harvest() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            spec = HarvestSpec(model.name, model_fingerprint(model.entry), hook, corpus_fingerprint(docs), ctx_len,
                               n_ctx, batch, ExclusionRule())
            harvest(replace(spec), docs, lambda: model, batch, root=Path(tmp))

    rates = {"bare": _best_rate(bare, n), "bridge": _best_rate(bridge, n),
             "harvest": _best_rate(full_harvest, n + batch * ctx_len, repeats=2)}
    table = Table(title=f"harvest throughput · {model.name} · {hook} · {n} tokens · {torch.get_num_threads()} threads")
    table.add_column("path")
    table.add_column("tokens/s", justify="right")
    table.add_column("vs bare", justify="right")
    for name, rate in rates.items():
        table.add_row(name, f"{rate:,.0f}", f"{rate / rates['bare']:.3f}")
    console.print(table)
    return rates
