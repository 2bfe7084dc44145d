"""Activation store: exclusion rule, streaming, resume after an interruption, corruption detection."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.harvest import harvest
from bench.store import ActivationStore, ArraySplit, ExclusionRule
from tests.conftest import small_spec


def test_exclusion_rule_by_hand():
    tokens = torch.tensor([[5, 6, 0, 7], [8, 9, 10, 11]])
    acts = torch.ones(2, 4, 3)
    acts[1, 2] *= 100.0  # a massive activation
    keep = ExclusionRule(norm_factor=10.0).mask(tokens, acts, torch.tensor([0, 1, 2]), reference_norm=3**0.5)
    assert keep.tolist() == [[False, True, False, True], [False, True, False, True]]
    assert "position 0" in ExclusionRule().describe()


def test_store_contents_are_consistent(store, model):
    assert store.d_model == model.d_model == 576
    assert store.train.n_contexts == 48 and store.eval.n_contexts == 16
    keep = store.train.keep()
    assert not keep[:, 0].any(), "position 0 is an attention sink and must be excluded"
    assert store.train.n_kept == int(keep.sum())
    x = store.train.kept_activations()
    assert x.shape == (store.train.n_kept, 576)
    assert x.norm(dim=-1).max() <= 10 * store.reference_norm + 1e-3
    assert 0 < store.train.excluded_fraction < 0.1
    # the stored activations are what the model computes
    tokens = torch.from_numpy(store.eval.tokens()[:2]).long()
    live = model.activations(tokens, store.hook)
    assert torch.allclose(live, store.eval.context_activations(0, 2), atol=1e-4)
    # train and eval come from different documents
    train_docs = {d for d, _ in store.train.documents}
    assert train_docs.isdisjoint({d for d, _ in store.eval.documents})


def test_kept_context_names_the_context_of_every_kept_row(store):
    """kept_context lines up with kept_activations, whole and subsampled (the document of each token: the unit of
    the token-level metrics)."""
    split = store.eval
    for max_tokens in (None, 100):
        x = split.kept_activations(max_tokens, seed=5)
        rows = split.kept_context(max_tokens, seed=5)
        assert rows.shape == (x.shape[0],) and (np.diff(rows) >= 0).all()
        acts = split.context_activations(0, split.n_contexts)  # `[C, T, d]`
        keep = torch.from_numpy(split.keep())
        for i in np.random.default_rng(0).choice(len(rows), 20, replace=False):
            c = int(rows[i])
            assert (acts[c][keep[c]] == x[i]).all(-1).any(), f"row {i} is not a kept token of context {c}"
    assert np.bincount(split.kept_context(), minlength=split.n_contexts).tolist() == split.keep().sum(1).tolist()
    assert len(split.doc()[split.kept_context()]) == split.n_kept


def test_batches_stream_every_kept_token_once_per_epoch(store):
    batches = list(store.train.batches(100, seed=3, epochs=1.0))
    assert len(batches) == store.train.n_kept // 100
    seen = torch.cat(batches)
    full = store.train.kept_activations()
    # a permutation of (a subset of) the kept rows: row sums match as multisets
    assert np.isin(seen.sum(-1).numpy(), full.sum(-1).numpy()).all()
    again = torch.cat(list(store.train.batches(100, seed=3, epochs=1.0)))
    assert torch.equal(seen, again)


def test_array_split_matches_the_interface():
    x = torch.arange(20.0).reshape(10, 2)
    split = ArraySplit(x)
    assert split.n_kept == 10 and split.d_model == 2
    assert len(list(split.batches(3, epochs=2.0))) == 6
    assert split.kept_activations(4, seed=0).shape == (4, 2)


def _some_docs(docs):
    """Every 8th document of the shipped corpus (real text): a harvest tokenizes every document of a split before
    cutting its contexts (5 s for the whole corpus), and the few contexts harvested here need far fewer."""
    return docs[::8]


def test_interrupted_harvest_resumes_to_identical_shards(model, docs, tmp_path):
    docs = _some_docs(docs)
    spec = small_spec(model, docs, train_contexts=32, eval_contexts=16, shard_contexts=16)  # 2 + 1 shards
    reference = harvest(spec, docs, lambda: model, batch_size=16, root=tmp_path / "a")  # in one go
    assert reference.manifest["complete"] and reference.root.name == spec.key()

    calls = {"n": 0}

    class Interrupt(Exception):
        pass

    def stop_after_first_shard(done, total):
        calls["n"] += 1
        if done >= 16 * spec.ctx_len + 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        harvest(spec, docs, lambda: model, batch_size=16, progress=stop_after_first_shard, root=tmp_path / "b")
    partial = json.loads((spec.path(tmp_path / "b") / "manifest.json").read_text())
    assert not partial["complete"] and len(partial["splits"]["train"]["shards"]) == 1
    resumed = harvest(spec, docs, lambda: model, batch_size=16, root=tmp_path / "b")
    assert resumed.manifest["splits"] == reference.manifest["splits"]


def test_corrupt_shard_names_the_command_that_clears_it(store, tmp_path):
    root = _copy(store, tmp_path)  # a real harvested store
    shard = root / "train" / "acts_00000.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern changed, the size kept
    shard.write_bytes(bytes(data))
    with pytest.raises(BenchError, match="clean-cache --activations"):
        ActivationStore.open(root)


def test_nan_activations_are_a_one_line_error(model, docs, tmp_path):
    docs = _some_docs(docs)
    spec = small_spec(model, docs, train_contexts=16, eval_contexts=16, shard_contexts=16)
    weight = model.bridge.original_model.model.layers[2].mlp.down_proj.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.fill_(float("nan"))
        with pytest.raises(BenchError, match="NaN or infinite activations"):
            harvest(spec, docs, lambda: model, batch_size=16, root=tmp_path)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def _copy(store, tmp_path) -> Path:
    """A copy of the session's real store, to damage."""
    return Path(shutil.copytree(store.root, tmp_path / "store"))


@pytest.mark.parametrize("damage, why", [
    (lambda s: ((s / "train" / "acts_00001.npy").unlink(), (s / "train" / "acts_00001.npy").mkdir()),
     "Is a directory"),
    (lambda s: (s / "eval" / "keep_00000.npy").write_bytes((s / "eval" / "keep_00000.npy").read_bytes()[:-7]),
     "checksum mismatch"),  # truncated
    (lambda s: (s / "train" / "doc_00002.npy").unlink(), "No such file"),
])
def test_damaged_shards_are_one_line_errors(store, tmp_path, damage, why):
    root = _copy(store, tmp_path)
    ActivationStore.open(root)  # the copy itself is fine
    damage(root)
    with pytest.raises(BenchError) as e:
        ActivationStore.open(root)
    message = str(e.value)
    assert message.startswith("corrupt activation shard ") and why in message and "\n" not in message, message
    assert message.endswith("clear it with `python -m bench clean-cache --activations` and rerun")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_unreadable_shard_is_a_one_line_error(store, tmp_path):
    root = _copy(store, tmp_path)
    (root / "train" / "acts_00000.npy").chmod(0)
    with pytest.raises(BenchError, match="corrupt activation shard .*Permission denied.*clean-cache --activations"):
        ActivationStore.open(root)


@pytest.mark.parametrize("damage, why", [
    (lambda m: m.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff"), "UnicodeDecodeError"),
    (lambda m: m.write_text("[1, 2]"), "not a JSON object"),
    (lambda m: (m.unlink(), m.mkdir()), "IsADirectoryError"),
    (lambda m: m.write_text(json.dumps({k: v for k, v in json.loads(m.read_text()).items() if k != "splits"})),
     "KeyError"),
    (lambda m: m.write_text(json.dumps({**json.loads(m.read_text()), "exclusion": {"rule": [1]}})), "TypeError"),
])
def test_damaged_manifest_is_a_one_line_error(store, tmp_path, damage, why):
    root = _copy(store, tmp_path)
    damage(root / "manifest.json")
    with pytest.raises(BenchError) as e:
        ActivationStore.open(root)
    assert why in str(e.value) and "clean-cache --activations" in str(e.value) and "\n" not in str(e.value)
