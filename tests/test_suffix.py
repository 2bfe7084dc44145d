"""Suffix passes (`SubjectModel.logits_from`, `logits(..., clean=)`): the layers after the hook, run on a given
residual, give the full patched pass's logits bit for bit, on the real SmolLM2 and on tiny random checkpoints of
every architecture with a suffix pass; the layers below the hook do not run; other hooks fall back to the full pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.errors import BenchError
from bench.models import _SUFFIX, _load_hf, load_model

EDITS = {
    "identity": lambda a: a,
    "zero": torch.zeros_like,
    "perturbed": lambda a: a + 0.5 * a.norm(dim=-1, keepdim=True) / a.shape[-1] ** 0.5
    * torch.randn(a.shape, generator=torch.Generator().manual_seed(1)),
}


def _in_place(a: torch.Tensor) -> torch.Tensor:
    a[:, 1:] = 0  # an edit that writes into its argument
    return a


@pytest.fixture(scope="module")
def tokens(model, docs) -> torch.Tensor:
    """2 real contexts of 32 tokens from the shipped corpus (a batch of several positions is all the equalities
    below need; the lm head's [tokens, 49k] logits make each pass's cost grow with the tokens)."""
    rows = [ids[:32] for ids in (model.tokenize(d.text) for d in docs[:40]) if len(ids) >= 32][:2]
    assert len(rows) == 2
    return torch.tensor(rows)


@pytest.mark.parametrize("hook", ["blocks.6.hook_resid_post", "blocks.12.hook_resid_post", "blocks.12.hook_resid_pre"])
def test_suffix_pass_equals_the_full_patched_pass(model, tokens, hook):
    clean = model.activations(tokens, hook)
    for name, edit in EDITS.items():
        full = model.logits(tokens, hook, edit)
        suffix = model.logits(tokens, hook, edit, clean=clean)
        assert torch.equal(suffix, full), f"{hook} {name}: max |diff| {(suffix - full).abs().max().item():.3g}"
        assert torch.equal(model.logits_from(edit(clean), hook), full)
    assert torch.equal(model.logits_from(clean, hook), model.logits(tokens))  # the identity edit is the clean run


def test_suffix_pass_counts_its_tokens_and_keeps_the_callers_activations(model, tokens):
    hook = "blocks.12.hook_resid_post"
    clean = model.activations(tokens, hook)
    kept = clean.clone()
    before = model.forward_tokens
    suffix = model.logits(tokens, hook, _in_place, clean=clean)
    assert model.forward_tokens - before == tokens.numel()
    assert torch.equal(clean, kept)  # the edit wrote into a copy
    assert torch.equal(suffix, model.logits(tokens, hook, _in_place))
    with pytest.raises(ValueError, match="do not match tokens"):
        model.logits(tokens[:1], hook, _in_place, clean=clean)


def test_one_clean_pass_gives_logits_and_activations(model, tokens):
    hook = "blocks.12.hook_resid_post"
    before = model.forward_tokens
    logits, clean = model.logits_and_activations(tokens, hook)
    assert model.forward_tokens - before == tokens.numel()
    assert torch.equal(logits, model.logits(tokens)) and torch.equal(clean, model.activations(tokens, hook))


def test_other_hook_points_take_the_full_pass(model, tokens):
    hook = "blocks.6.hook_mlp_out"
    assert model.suffix_start(hook) is None
    clean = model.activations(tokens, hook)
    assert torch.equal(model.logits(tokens, hook, torch.zeros_like, clean=clean),
                       model.logits(tokens, hook, torch.zeros_like))
    with pytest.raises(BenchError, match="no suffix pass"):
        model.logits_from(clean, hook)


def test_without_a_fitting_transformers_every_edit_takes_the_full_pass(model, tokens, monkeypatch):
    import bench.models

    hook = "blocks.12.hook_resid_post"
    clean = model.activations(tokens, hook)
    monkeypatch.setattr(bench.models, "_mirror_fits_transformers", lambda: False)
    assert model.suffix_start(hook) is None
    below: list[int] = []
    first = model.bridge.blocks[0].register_forward_hook(lambda *_: below.append(1))
    try:
        model.logits(tokens, hook, torch.zeros_like, clean=clean)
    finally:
        first.remove()
    assert below == [1]  # the full pass ran


def test_the_bridge_hook_is_the_transformers_layer_output(model, tokens):
    """blocks.L.hook_resid_post is decoder layer L's output of the unprocessed transformers model (eager attention,
    what the bridge runs): the bridge changes no weight, so a suffix pass over the HF layers is the same model."""
    hf, _ = _load_hf(model.entry)
    hf.set_attn_implementation("eager")
    with torch.inference_mode():
        hidden = hf(tokens, output_hidden_states=True).hidden_states  # [embeddings, layer 0, ..., final norm]
    for layer in (0, 6, 12):
        assert torch.equal(model.activations(tokens, f"blocks.{layer}.hook_resid_post"), hidden[layer + 1])
    assert torch.equal(model.activations(tokens, "blocks.0.hook_resid_pre"), hidden[0])


def _tiny(arch: str, path: Path) -> Path:
    """A random 4-layer checkpoint of `arch` with a word-level tokenizer, loadable by `load_model(path)`."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    v = 64
    config = {
        "LlamaForCausalLM": lambda: tf.LlamaConfig(vocab_size=v, hidden_size=32, intermediate_size=64,
                                                   num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
        "GPTNeoXForCausalLM": lambda: tf.GPTNeoXConfig(vocab_size=v, hidden_size=32, intermediate_size=64,
                                                       num_hidden_layers=4, num_attention_heads=4, rotary_pct=0.25),
        "GPT2LMHeadModel": lambda: tf.GPT2Config(vocab_size=v, n_embd=32, n_layer=4, n_head=4, n_positions=64,
                                                 bos_token_id=1, eos_token_id=2),
        "Gemma3ForCausalLM": lambda: tf.Gemma3TextConfig(  # sliding and full layers, window shorter than the text
            vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=1, head_dim=8, sliding_window=4, final_logit_softcapping=5.0,
            layer_types=["sliding_attention", "full_attention"] * 2),
    }[arch]()
    config.architectures = [arch]
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(v)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tf.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="t0", bos_token="t1",
                               eos_token="t2").save_pretrained(path)
    return path


@pytest.mark.parametrize("arch", sorted(_SUFFIX))
def test_every_suffix_architecture_equals_its_full_pass(arch, tmp_path):
    model = load_model(str(_tiny(arch, tmp_path / arch)))
    assert type(model.bridge.original_model).__name__ == arch
    tokens = torch.randint(0, 64, (3, 20), generator=torch.Generator().manual_seed(0))
    below: list[int] = []  # calls of the first decoder layer
    first = model.bridge.blocks[0].register_forward_hook(lambda *_: below.append(1))
    try:
        for layer in range(model.n_layers):
            for point in ("resid_pre", "resid_post"):
                hook = f"blocks.{layer}.hook_{point}"
                clean = model.activations(tokens, hook)
                for name, edit in EDITS.items():
                    full = model.logits(tokens, hook, edit)
                    below.clear()
                    suffix = model.logits(tokens, hook, edit, clean=clean)
                    assert torch.equal(suffix, full), f"{hook} {name}: max |diff| {(suffix - full).abs().max():.3g}"
                    assert len(below) == (hook == "blocks.0.hook_resid_pre"), hook  # block 0 ran only if after the hook
    finally:
        first.remove()
