"""The throughput reference must not change the shared model it measures."""

from __future__ import annotations

import torch

from bench.perf import bare_forward, best_seconds, bridge_forward


def test_bare_forward_leaves_the_model_whole(model):
    tokens = torch.randint(100, 40_000, (2, 16), generator=torch.Generator().manual_seed(0))
    before = model.logits(tokens)
    n_layers = len(model.bridge.original_model.model.layers)
    assert best_seconds(bare_forward(model, tokens, layer=3, batch=2), repeats=1) > 0
    assert best_seconds(bridge_forward(model, tokens, "blocks.3.hook_resid_post", batch=2), repeats=1) > 0
    assert len(model.bridge.original_model.model.layers) == n_layers == model.n_layers
    assert torch.equal(model.logits(tokens), before)
