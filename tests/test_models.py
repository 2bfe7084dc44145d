"""Subject models that are absent or damaged on disk: one-line errors naming the fix; other errors surface."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.models import ModelEntry, _hub_local_dir, _load_hf, hub_model_missing, resolve_model


@pytest.mark.parametrize("hub_id", ["decompbench-tests/never-cached-model", "not a//valid id"])
def test_a_hub_model_not_in_the_cache_is_a_one_line_error(hub_id):
    entry = ModelEntry("absent", "", "GPT2LMHeadModel", 0, False, hub_id=hub_id)
    with pytest.raises(BenchError, match="not in the local Hugging Face cache"):
        _hub_local_dir(entry)
    assert hub_id in hub_model_missing(entry)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real (tiny) converted checkpoint: what `_load_hf` leaves under <cache>/models/<name>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("checkpoint") / "tiny"
    config = LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(path)
    return path


def _header_cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("damage, raised", [
    (None, None),
    (lambda d: (d / "config.json").write_text("{oops"), "OSError"),
    (lambda d: (d / "model.safetensors").unlink(), "OSError"),
    (lambda d: _header_cut(d / "model.safetensors"), "SafetensorError"),
    (lambda d: (d / "tokenizer.json").write_text("{oops"), "JSONDecodeError"),
    (lambda d: (d / "tokenizer.json").write_text('{"version": "1.0", "added_tokens": [], "model": {"type": "?"}}'),
     "Exception"),  # the tokenizers library's own parse error is a bare Exception
])
def test_a_damaged_converted_model_is_a_one_line_error(tiny_checkpoint, tmp_path, monkeypatch, damage, raised):
    monkeypatch.setenv("DECOMPBENCH_CACHE", str(tmp_path))
    target = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_checkpoint, target)
    entry = ModelEntry("tiny", "", "LlamaForCausalLM", 0, False, locate_gguf=lambda: tmp_path / "never-read.gguf")
    if damage is None:  # the undamaged copy loads: the cases below fail for their damage alone
        hf, tok = _load_hf(entry)
        assert hf.config.hidden_size == 8 and tok("a b")["input_ids"] == [1, 2]
        return
    damage(target)
    with pytest.raises(BenchError) as e:
        _load_hf(entry)
    assert f"converted model in {target} is corrupt ({raised})" in str(e.value), str(e.value)
    assert "clean-cache --models" in str(e.value) and "\n" not in str(e.value)


def test_a_local_checkpoint_with_a_damaged_config_is_a_one_line_error(tmp_path):
    (tmp_path / "config.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(BenchError, match="its config.json is not a transformers config"):
        resolve_model(str(tmp_path))

