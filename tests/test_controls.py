"""The random-init control (Heap et al. 2025): a real re-initialised SmolLM2 beside the trained one.

It must really be untrained (next-token loss at the uniform-vocabulary level, every weight the scheme draws
re-drawn), keep everything but the weights (shapes, hooks, tokenizer), be seeded, name itself in every key, and
run through the whole pipeline beside the trained model with a trained-vs-control table at the end.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from bench.corpus import make_contexts, split_documents
from bench.errors import BenchError
from bench.models import CONTROLS, _load_hf, check_control, load_model, model_fingerprint, reinitialise, resolve_model
from reports.controls import build_control_tables, controls_markdown
from tests.test_cli import assert_one_line_error, cli

TEXT = "The quick brown fox jumps over the lazy dog, said the Jargon File."


@pytest.fixture(scope="module")
def control():
    return load_model("smollm2-135m", control="random-init", seed=0)


def _params(model) -> list[tuple[str, torch.Tensor]]:
    return list(model.bridge.original_model.named_parameters())


def _cross_entropy(model, docs) -> float:
    ctx = make_contexts(split_documents(docs)["eval"], model.tokenize, 64, 8, None, 1)
    tokens = torch.from_numpy(ctx.tokens).long()
    with torch.inference_mode():
        logits = model.logits(tokens).float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)).item()


def test_control_predicts_like_a_uniform_guess(model, control, docs):
    vocab = control.bridge.cfg.d_vocab
    trained, untrained = _cross_entropy(model, docs), _cross_entropy(control, docs)
    assert abs(untrained - math.log(vocab)) < 1.0, (untrained, math.log(vocab))  # 10.8 nats for 49,152 tokens
    assert trained < 6.0 and untrained - trained > 4.0, (trained, untrained)


def test_every_weight_the_scheme_draws_is_redrawn(model, control):
    trained, fresh = _params(model), _params(control)
    assert [n for n, _ in trained] == [n for n, _ in fresh]
    for (name, t), (_, c) in zip(trained, fresh, strict=True):
        if "norm" in name:  # the scheme resets norms to ones
            assert torch.equal(c, torch.ones_like(c)) and not torch.equal(t, c), name
        else:
            assert (t == c).float().mean().item() < 1e-4, name  # every entry re-drawn
            assert c.std().item() == pytest.approx(0.02, rel=0.05), name  # config.initializer_range
    report = control.init_report
    assert len(report["redrawn"]) + len(report["constant"]) == len(trained) and not report["kept"]
    # tied: the unembedding is the (re-drawn) embedding
    hf = control.bridge.original_model
    assert hf.get_output_embeddings().weight is hf.get_input_embeddings().weight


def test_keep_embeddings_keeps_them_bit_for_bit(model):
    keep = load_model("smollm2-135m", control="random-init-keep-embeddings", seed=0)
    trained, fresh = dict(_params(model)), dict(_params(keep))
    embed = keep.init_report["kept"]
    assert embed == ["model.embed_tokens.weight"]
    emb_name = next(n for n in trained if "embed_tokens" in n)
    assert torch.equal(trained[emb_name], fresh[emb_name])
    hf = keep.bridge.original_model
    assert hf.get_output_embeddings().weight is hf.get_input_embeddings().weight  # tied: the unembedding too
    changed = [n for n in trained if n != emb_name and not torch.equal(trained[n], fresh[n])]
    assert len(changed) == len(trained) - 1


def test_control_keeps_shapes_hooks_and_tokenizer(model, control):
    assert [p.shape for _, p in _params(model)] == [p.shape for _, p in _params(control)]
    assert (control.n_layers, control.d_model) == (model.n_layers, model.d_model)
    assert control.control == "random-init" and model.control is None
    assert control.tokenize(TEXT) == model.tokenize(TEXT)
    assert torch.equal(control.special_ids, model.special_ids)
    tokens = torch.tensor([model.tokenize(TEXT)])
    for hook in ("blocks.0.hook_resid_pre", "blocks.6.hook_mlp_out", f"blocks.{model.n_layers - 1}.hook_resid_post"):
        assert control.validate_hook(hook) == model.validate_hook(hook)
        acts = control.activations(tokens, hook)
        assert acts.shape == model.activations(tokens, hook).shape and torch.isfinite(acts).all()
    with pytest.raises(BenchError, match="out of range"):
        control.validate_hook(f"blocks.{model.n_layers}.hook_resid_post")


def test_seeded_and_leaves_the_global_generator_alone():
    entry = resolve_model("smollm2-135m")

    def weights(seed: int) -> list[torch.Tensor]:
        hf, _ = _load_hf(entry)
        state = torch.get_rng_state()
        reinitialise(hf, "random-init", seed)
        assert torch.equal(state, torch.get_rng_state())  # the draw happens in a forked generator
        return [p.detach() for p in hf.parameters()]

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(torch.equal(a, b) == bool((a == a.flatten()[0]).all()) for a, b in zip(first, other, strict=True))


def test_the_control_is_part_of_the_model_identity():
    entry = resolve_model("smollm2-135m")
    base = model_fingerprint(entry)
    prints = {base, *(model_fingerprint(entry, c, s) for c in CONTROLS for s in (0, 1))}
    assert len(prints) == 1 + 2 * len(CONTROLS) and "+" not in base  # the trained model's key is as it was
    assert "random-init" in model_fingerprint(entry, "random-init", 0)
    with pytest.raises(BenchError, match="choose from random-init, random-init-keep-embeddings"):
        check_control("random")


def test_unknown_control_is_a_one_line_error():
    assert_one_line_error(cli("run", "--control", "shuffled", "--preset", "smoke"),
                          "unknown control 'shuffled'; choose from random-init")


def _rec(method, fvu, control=None, sparse=False, k=None):
    return {"model": "m", "hook": "h", "control": control, "method": method, "task": "reconstruction",
            "sparse": sparse, "matched_k": k, "metrics": {"fvu": {"value": fvu, "higher_is_better": False}}}


def test_control_table_pairs_records():
    trained = [_rec("pca", 0.0), _rec("pca@top8", 0.4, k=8), _rec("sae-relu", 0.3, sparse=True, k=8)]
    assert build_control_tables(trained) == []  # no control: nothing added to the leaderboard
    records = trained + [_rec("pca@top8", 0.5, "random-init", k=8), _rec("sae-relu", 0.25, "random-init", True, 8)]
    (table,) = build_control_tables(records, ["pca", "sae-relu"])
    rows = {(r.method, r.group): (r.trained, r.control, r.difference) for r in table.rows}
    assert rows[("pca@top8", "top-k")] == pytest.approx((0.4, 0.5, -0.1))
    assert rows[("sae-relu", "all")] == pytest.approx((0.3, 0.25, 0.05))
    assert ("pca", "all") not in rows  # no control record: not a row
    md = controls_markdown([table])
    assert "| reconstruction: fvu ↓ | `sae-relu` | all | 0.3000 | 0.2500 | +0.0500 |" in md


def test_run_with_control_writes_both_sides_and_the_comparison(tmp_path):
    out = tmp_path / "run"
    # layer 3, half an epoch and a 4k-token PCA keep both harvests and fits short; the pipeline is the same at any size
    args = ("run", "--preset", "smoke", "--control", "random-init", "--methods", "pca[max_tokens=4000],sae-relu[epochs=0.5]",
            "--tasks", "reconstruction", "--layer", "3", "--out", str(out))
    run = cli(*args)
    assert run.returncode == 0, run.stderr[-3000:]
    trained = [json.loads(p.read_text()) for p in (out / "results").glob("*.json")]
    control = [json.loads(p.read_text()) for p in (out / "controls" / "random-init" / "results").glob("*.json")]
    assert trained and {r["method"] for r in trained} == {r["method"] for r in control}
    assert {r["control"] for r in trained} == {None} and {r["control"] for r in control} == {"random-init"}
    t_key, c_key = trained[0]["activations"], control[0]["activations"]
    assert t_key["key"] != c_key["key"] and "random-init" in c_key["model_fingerprint"]
    sae = next(r["method"] for r in trained if r["method"].startswith("sae-relu"))
    assert (out / "controls" / "random-init" / "dictionaries" / sae).is_dir()

    board = json.loads((out / "leaderboard.json").read_text())
    assert [len(b["rows"]) for b in board["boards"]] == [4]  # the trained leaderboard alone: pca, sae-relu, top-k
    rows = {(r["method"], r["group"], r["metric"]): r for r in board["controls"][0]["rows"]}
    fvu = rows[(sae, "all", "fvu")]
    by_method = {(r["method"], r["control"]): r["metrics"]["fvu"]["value"] for r in trained + control}
    assert fvu["trained"] == by_method[(sae, None)] and fvu["control"] == by_method[(sae, "random-init")]
    assert fvu["difference"] == pytest.approx(fvu["trained"] - fvu["control"])
    assert "trained vs `random-init`" in (out / "leaderboard.md").read_text()
    assert "trained vs control (random-init)" in run.stdout and "trained − control" in run.stdout

    # the same command again resumes both sides: nothing is refitted or recomputed
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if "results" in p.parts}
    again = cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if "results" in p.parts}
    assert again.stdout == run.stdout
