"""`python -m bench perf`: harvesting throughput as a ratio against a bare forward pass to the same layer.

Both are measured in the same process on the same tokens, so the ratio holds on a shared, noisy machine.
    bare     plain transformers model cut after the hooked layer (no hooks, nothing stored)
    bridge   TransformerBridge.run_with_cache(stop_at_layer=L+1), what harvesting calls
    harvest  the whole harvest: tokenise, forward, exclusion mask, write shards, checksums
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.table import Table

from bench.corpus import Document, corpus_fingerprint, load_corpus
from bench.harvest import HarvestSpec, harvest
from bench.models import SubjectModel, load_model, model_fingerprint
from bench.store import ExclusionRule


def best_seconds(fn: Callable[[], None], repeats: int = 3) -> float:
    """Fastest of `repeats` timed calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bare_forward(model: SubjectModel, tokens: torch.Tensor, layer: int, batch: int) -> Callable[[], None]:
    """The reference: the plain transformers body cut after `layer`, no hooks, nothing kept.

    The cut is made for the duration of each call and undone after it: the model object is shared.
    """
    body = model.bridge.original_model.model

    @torch.inference_mode()
    def run() -> None:
        layers = body.layers
        body.layers = layers[: layer + 1]
        try:
            for b in tokens.split(batch):
                body(b)
        finally:
            body.layers = layers

    return run


def bridge_forward(model: SubjectModel, tokens: torch.Tensor, hook: str, batch: int) -> Callable[[], None]:
    def run() -> None:
        for b in tokens.split(batch):
            model.activations(b, hook)

    return run


def full_harvest(model: SubjectModel, docs: list[Document], hook: str, n_ctx: int, ctx_len: int,
                 batch: int) -> tuple[Callable[[], None], int]:
    """A harvest of `n_ctx` train + `batch` eval contexts into a temporary store; returns (fn, tokens)."""
    spec = HarvestSpec(model.name, model_fingerprint(model.entry), hook, corpus_fingerprint(docs), ctx_len, n_ctx,
                       batch, ExclusionRule())

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            harvest(spec, docs, lambda: model, batch, root=Path(tmp))

    return run, (n_ctx + batch) * ctx_len


def harvest_throughput(model_name: str, layer: int | None, n_tokens: int, batch: int, console: Console) -> dict:
    model = load_model(model_name)
    layer = model.entry.default_layer if layer is None else layer
    hook = f"blocks.{layer}.hook_resid_post"
    ctx_len = 128
    n_ctx = max(batch, n_tokens // ctx_len)
    docs = load_corpus()
    tokens = torch.randint(100, 40_000, (n_ctx, ctx_len), generator=torch.Generator().manual_seed(0))
    harvest_fn, harvest_tokens = full_harvest(model, docs, hook, n_ctx, ctx_len, batch)
    rates = {
        "bare": tokens.numel() / best_seconds(bare_forward(model, tokens, layer, batch)),
        "bridge": tokens.numel() / best_seconds(bridge_forward(model, tokens, hook, batch)),
        "harvest": harvest_tokens / best_seconds(harvest_fn, repeats=2),
    }
    table = Table(title="harvest throughput", caption=f"{model.name} · {hook} · {tokens.numel()} tokens · "
                  f"{torch.get_num_threads()} threads · best of 3")
    table.add_column("path")
    table.add_column("tokens/s", justify="right")
    table.add_column("vs bare", justify="right")
    for name, rate in rates.items():
        table.add_row(name, f"{rate:,.0f}", f"{rate / rates['bare']:.3f}")
    console.print(table)
    return rates
