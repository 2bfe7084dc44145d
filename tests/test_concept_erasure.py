"""concept_erasure: the concept datasets, the edits on cases known by construction, and the task on the real model."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from bench.dictionary import Dictionary, LinearDictionary
from bench.errors import BenchError
from tasks.base import TaskContext
from tasks.concept_erasure import ConceptErasure
from tasks.concept_erasure.concepts import number_concept, pronoun_concept
from tasks.concept_erasure.edits import FeatureAblation, MeanDifference, check_affine, leace

# --- datasets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [pronoun_concept, number_concept])
def test_prompt_concepts_are_balanced_single_token_and_split_by_word(make, model):
    c = make(20, 10, model.tokenize, seed=1)
    for split in (c.train, c.test):
        assert int(split.label.sum()) == len(split.label) // 2  # balanced labels
        for i, text in enumerate(split.texts):
            assert model.tokenizer.decode(split.tokens[i, : split.length[i]]) == text
    assert all(model.tokenizer.decode([a]).strip() in ("he", "she", "is", "are") for a in c.answers)
    words = lambda split: {t.split()[0] if c.name == "pronoun" and not t.startswith(("After", "When")) else t  # noqa: E731
                           for t in split.texts}
    assert words(c.train) and words(c.test)
    # the word each prompt is built on is a single token and never shared by train and test
    train_ids = set(c.train.tokens[c.train.real()].tolist())
    test_ids = set(c.test.tokens[c.test.real()].tolist())
    template_ids = train_ids & test_ids
    assert (train_ids - template_ids) and (test_ids - template_ids)
    assert make(20, 10, model.tokenize, seed=1).train.texts == c.train.texts
    with pytest.raises(BenchError, match="even"):
        make(7, 10, model.tokenize, seed=1)


# --- edits --------------------------------------------------------------------------------------------------


def _two_classes(n: int = 4000, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=g) < 0.5
    x = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)
    x[y] += torch.randn(d, generator=g) * 1.5
    return x, y


def _probe_accuracy(x_fit, y_fit, x_test, y_test) -> float:
    probe = LogisticRegression(max_iter=2000).fit(x_fit.numpy(), y_fit.numpy())
    return float((probe.predict(x_test.numpy()) == y_test.numpy()).mean())


def test_leace_drives_a_retrained_probe_to_chance():
    x, y = _two_classes()
    fit, test = slice(0, 2000), slice(2000, None)
    assert _probe_accuracy(x[fit], y[fit], x[test], y[test]) > 0.85
    erase = leace(x[fit], y[fit])
    erased = erase(x)
    assert _probe_accuracy(erased[fit], y[fit], erased[test], y[test]) == pytest.approx(0.5, abs=0.04)
    # on the data it was fitted on, the class means coincide exactly
    assert torch.allclose(erased[fit][y[fit]].mean(0), erased[fit][~y[fit]].mean(0), atol=1e-4)


def test_mean_difference_projection_equalises_the_class_means():
    x, y = _two_classes(400, 5)
    eraser = MeanDifference(x, y)
    edited = eraser(x)
    assert not torch.allclose(x[y].mean(0), x[~y].mean(0), atol=0.1)
    assert torch.allclose(edited[y].mean(0), edited[~y].mean(0), atol=1e-4)  # the means coincide...
    u = eraser.u
    assert torch.allclose(edited - x, ((edited - x) @ u)[:, None] * u, atol=1e-5)  # ...moving x only along u


def test_feature_ablation_by_hand():
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    d = LinearDictionary.from_matrices(torch.eye(2), w, signed=False)  # codes relu(x), decode c @ w
    x = torch.tensor([[3.0, 1.0], [-1.0, 4.0]])
    ablate = FeatureAblation(d, torch.tensor([1]), torch.tensor([0.5]))
    # feature 1 goes from x[:, 1] to 0.5; it writes 2 x its code along dim 1; the error term is kept
    assert torch.allclose(ablate(x), torch.tensor([[3.0, 1.0 + 2 * (0.5 - 1.0)], [-1.0, 4.0 + 2 * (0.5 - 4.0)]]))
    assert torch.equal(FeatureAblation(d, torch.tensor([], dtype=torch.long), torch.tensor([]))(x), x)
    codes = d.encode(x)
    assert torch.allclose(ablate.pooled(x.mean(0, keepdim=True), codes.mean(0, keepdim=True)), ablate(x).mean(0))


class _Squared(LinearDictionary):
    kind = ""  # not registered

    def decode(self, codes):
        return super().decode(codes**2)


def test_pooled_edits_refuse_a_non_affine_decoder():
    d = _Squared(2, 2, signed=False)
    d.encoder.copy_(torch.eye(2))
    d.decoder.copy_(torch.eye(2))
    with pytest.raises(BenchError, match="affine"):
        check_affine(d, torch.tensor([[1.0, 0.0], [3.0, 2.0]]))
    check_affine(LinearDictionary.from_matrices(torch.eye(2), torch.eye(2), signed=False), torch.tensor([[1.0, 0.0], [3.0, 2.0]]))
    assert isinstance(d, Dictionary)


# --- the real model -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(store, model):
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: model)
    task = ConceptErasure(ks=(1, 4), n_train=16, n_test=8, n_genre_train=4, n_genre_test=2, n_damage_contexts=1)
    task.prepare(ctx)
    return task, ctx


def test_the_model_knows_the_pronoun_and_leace_removes_what_a_probe_reads(prepared):
    task, _ = prepared
    clean = task.clean["pronoun"]
    assert clean["behaviour"] > 0.6 and clean["probe"] > 0.7
    lea = task.baselines["pronoun"]["leace"]
    assert lea["probe"] < clean["probe"] and lea["kl"] > 0 and lea["edit"] > 0


def test_ablating_nothing_changes_nothing(prepared):
    task, ctx = prepared
    eye = torch.eye(ctx.store.d_model)
    d = LinearDictionary.from_matrices(eye, eye)
    none = FeatureAblation(d, torch.tensor([], dtype=torch.long), torch.tensor([]))
    for c in task.concepts:
        out = task._measure(ctx, c, none)
        assert out["kl"] == 0.0 and out["ce_increase"] == 0.0 and out["edit"] == 0.0
        assert out["probe"] == task.clean[c.name]["probe"] and out.get("behaviour") == task.clean[c.name].get("behaviour")


def test_evaluate_reports_every_concept(prepared):
    task, ctx = prepared
    eye = torch.eye(ctx.store.d_model)
    out = task.evaluate(LinearDictionary.from_matrices(eye, eye), ctx)
    names = [c.name for c in task.concepts]
    assert names[:2] == ["pronoun", "number"]
    for name in names:
        assert f"{name}_erasure" in out.metrics and f"{name}_damage_kl" in out.metrics
        curve = out.details["concepts"][name]["curve"]
        assert [r["k"] for r in curve] == [1, 4] and len(curve[-1]["features"]) == 4
        assert curve[-1]["top"]["kl"] >= 0 and "leace" in out.details["concepts"][name]
    assert out.metrics["damage_kl"].value > 0 and "LEACE" in out.details["board_notes"][0]
