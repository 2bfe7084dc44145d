"""`--eval-dtype bfloat16`: evaluation passes under autocast. Their logits are close to float32's but not equal;
every path through the model agrees with every other in the same precision (an identity edit is the clean run, bit
for bit), so a KL of no edit is exactly 0; a dictionary's edit runs in float32 inside the pass; and the harvest
stays float32, so the fitted dictionaries do not depend on the setting."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bench.harvest import harvest
from tests.conftest import small_spec

SUFFIX_HOOK = "blocks.12.hook_resid_post"  # edited passes start at the hook
INNER_HOOK = "blocks.12.hook_mlp_out"  # no suffix pass: the full pass with a hook


@pytest.fixture(scope="module")
def bf16(model):
    """The session's model (shared weights) with bf16 evaluation passes."""
    return replace(model, eval_dtype="bfloat16")


@pytest.fixture(scope="module")
def tokens(model, docs) -> torch.Tensor:
    """2 real contexts of 32 tokens from the shipped corpus, spread over its documents."""
    rows = [ids[:32] for ids in (model.tokenize(d.text) for d in docs[::25]) if len(ids) >= 32][:2]
    return torch.tensor(rows)


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    p, q = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def test_bf16_logits_are_close_to_float32_and_float32_typed(model, bf16, tokens):
    exact, fast = model.logits(tokens), bf16.logits(tokens)
    assert fast.dtype == torch.float32
    assert not torch.equal(exact, fast)  # the setting takes effect
    assert 0 < _kl(exact, fast) < 5e-3  # measured ~6e-4 a token on real text
    assert (exact.argmax(-1) == fast.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("hook", [SUFFIX_HOOK, INNER_HOOK])
def test_bf16_paths_agree_so_no_edit_is_no_divergence(bf16, tokens, hook):
    clean_logits, clean = bf16.logits_and_activations(tokens, hook)
    assert torch.equal(clean_logits, bf16.logits(tokens))
    assert torch.equal(clean, bf16.activations(tokens, hook))
    same = bf16.logits(tokens, hook, lambda a: a, clean=clean)  # suffix pass (resid_post) or hooked full pass
    assert torch.equal(same, clean_logits) and _kl(clean_logits, same) == 0.0


@pytest.mark.parametrize("hook", [SUFFIX_HOOK, INNER_HOOK])
def test_edits_run_in_float32_inside_a_bf16_pass(bf16, tokens, hook):
    seen = []

    def edit(a: torch.Tensor) -> torch.Tensor:
        seen.append((a.dtype, torch.is_autocast_enabled("cpu"), (a @ torch.eye(a.shape[-1])).dtype))
        return a * 0.5

    clean = bf16.activations(tokens, hook)
    edited = bf16.logits(tokens, hook, edit, clean=clean)
    assert seen == [(torch.float32, False, torch.float32)]
    assert edited.dtype == torch.float32 and not torch.equal(edited, bf16.logits(tokens))


def test_the_harvest_is_float32_whatever_the_eval_dtype(model, bf16, docs, tmp_path):
    docs = docs[::8]
    spec = small_spec(model, docs, train_contexts=8, eval_contexts=8, shard_contexts=8)
    a = harvest(spec, docs, lambda: model, batch_size=8, root=tmp_path / "fp32")
    b = harvest(spec, docs, lambda: bf16, batch_size=8, root=tmp_path / "bf16")
    for split in ("train", "eval"):
        assert torch.equal(getattr(a, split).context_activations(0, 8), getattr(b, split).context_activations(0, 8))
    assert bf16.eval_dtype == "bfloat16"  # restored after the harvest
    first = torch.from_numpy(a.eval.tokens()[:1]).long()
    with bf16.float32():
        assert torch.equal(bf16.logits(first), model.logits(first))
