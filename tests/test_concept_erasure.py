"""concept_erasure: the concept datasets, the edits on cases known by construction, and the task on the real model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from bench.dictionary import LinearDictionary
from bench.errors import BenchError
from tasks.base import TaskContext
from tasks.concept_erasure import ConceptErasure
from tasks.concept_erasure.concepts import (FEMALE, MALE, NOUNS, NUMBER_TEMPLATES, PRONOUN_TEMPLATES, genre_contexts,
                                            number_concept, pronoun_concept)
from tasks.concept_erasure.edits import FeatureAblation, MeanDifference, check_affine, leace
from tasks.concept_erasure.task import class_weights, grouped_ratio

# --- datasets -----------------------------------------------------------------------------------------------


def _word(text: str, templates: tuple[str, ...]) -> str:
    """The word a prompt was built on, read back through its template."""
    for t in templates:
        found = re.fullmatch(re.escape(t).replace(re.escape("{w}"), r"(\w+)"), text)
        if found:
            return found.group(1)
    raise AssertionError(f"{text!r} fits no template")


@pytest.mark.parametrize("make", [pronoun_concept, number_concept])
def test_prompt_concepts_are_balanced_single_token_and_split_by_word(make, model):
    c = make(20, 10, model.tokenize, seed=1)
    templates, (negative, positive) = {"pronoun": (PRONOUN_TEMPLATES, (MALE, FEMALE)),
                                       "number": (NUMBER_TEMPLATES, tuple(zip(*NOUNS, strict=True)))}[c.name]
    for split in (c.train, c.test):
        assert int(split.label.sum()) == len(split.label) // 2  # balanced labels
        for i, text in enumerate(split.texts):
            assert model.tokenizer.decode(split.tokens[i, : split.length[i]]) == text
    assert all(model.tokenizer.decode([a]).strip() in ("he", "she", "is", "are") for a in c.answers)
    for seed in range(5):  # the split is seeded: check several draws, each as the task makes it
        c = make(40, 20, model.tokenize, seed=seed)
        words = {}
        for name, split in (("train", c.train), ("test", c.test)):
            words[name] = [_word(t, templates) for t in split.texts]
            # each word carries the label (a female name / a plural noun is a positive) and is one token
            assert [w in positive for w in words[name]] == split.label.tolist()
            assert all(w in negative for w, y in zip(words[name], split.label.tolist(), strict=True) if not y)
            assert all(len(model.tokenize(" " + w)) == 1 for w in words[name])
        # train and test never share a word, so a probe must read the concept and not memorise the word
        assert not set(words["train"]) & set(words["test"]), seed
        assert len(set(words["test"])) >= 2 and len(set(words["train"])) >= 2
    assert make(20, 10, model.tokenize, seed=1).train.texts == make(20, 10, model.tokenize, seed=1).train.texts
    with pytest.raises(BenchError, match="even"):
        make(7, 10, model.tokenize, seed=1)


def test_genre_contexts_spread_over_documents_and_are_seeded(store):
    idx, labels = genre_contexts(store.train, 3, ("scripture", "fiction"), seed=0, tag="t")
    doc = store.train.doc()
    genre = [store.train.documents[d][1] for d in doc[idx]]
    assert genre == ["scripture"] * int((~labels).sum()) + ["fiction"] * int(labels.sum())
    assert int((~labels).sum()) == 3 and len(set(doc[idx].tolist())) == len(idx)  # one context per document
    assert genre_contexts(store.train, 3, ("scripture", "fiction"), seed=0, tag="t")[0].tolist() == idx.tolist()
    many = [genre_contexts(store.train, 3, ("scripture", "fiction"), seed=s, tag="t")[0].tolist() for s in range(4)]
    assert len({tuple(m) for m in many}) > 1  # the seed picks which documents


# --- evidence -----------------------------------------------------------------------------------------------


def test_share_removed_is_a_grouped_ratio_by_hand():
    """The share of above-chance balanced accuracy removed, (bacc_clean - bacc_k) / (bacc_clean - 1/2), mean over k,
    is sum(num) / sum(den) per k with num = w (clean - edited), den = w (clean - 1/2), w = 1 / (2 n_class)."""
    label = np.array([1, 1, 1, 0, 0], bool)  # unbalanced: balanced accuracy differs from accuracy
    clean = np.array([1, 1, 0, 1, 1], bool)  # right / wrong per example, before and after two edits
    edited = [np.array([1, 0, 0, 1, 0], bool), np.array([0, 0, 0, 1, 1], bool)]
    w = class_weights(label)
    assert w.tolist() == [1 / 6, 1 / 6, 1 / 6, 1 / 4, 1 / 4] and w.sum() == pytest.approx(1.0)
    bacc = lambda right: balanced_accuracy_score(label, np.where(right, label, ~label))  # noqa: E731
    want = np.mean([(bacc(clean) - bacc(e)) / (bacc(clean) - 0.5) for e in edited])
    num = np.stack([w * (clean.astype(float) - e) for e in edited], 1)
    den = np.repeat((w * (clean - 0.5))[:, None], 2, 1)
    ids = ["d0", "d0", "d1", "d2", "d3"]  # two examples of one document: one unit
    ev = grouped_ratio([(ids, num, den)], "document", ("test",))
    assert ev.n == 4 and ev.value() == pytest.approx(want)
    # by hand: bacc clean = (2/3 + 1) / 2 = 5/6; k1: (1/3 + 1/2) / 2 = 5/12, k2: (0 + 1) / 2 = 1/2
    assert want == pytest.approx(np.mean([(5 / 6 - 5 / 12) / (1 / 3), (5 / 6 - 1 / 2) / (1 / 3)]))
    # two concepts: their groups sit side by side, shared ids (damage documents) are one unit
    both = grouped_ratio([(ids, num, den), (["d0", "x"], np.ones((2, 1)), np.full((2, 1), 2.0))], "example", ())
    assert both.n == 5 and both.value() == pytest.approx((2 * want + 0.5) / 3)


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
    # u is the DiffMean direction; after the edit both classes project to the same value on it (every example does)
    diff = x[y].mean(0) - x[~y].mean(0)
    assert torch.allclose(u, diff / diff.norm(), atol=1e-6)
    assert (edited[y] @ u).mean() == pytest.approx(float((edited[~y] @ u).mean()), abs=1e-4)
    assert torch.allclose(edited @ u, torch.full((len(x),), float(x.mean(0) @ u)), atol=1e-4)


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
    # the refusal is for the right reason: decode really is not affine (the midpoint of two codes decodes elsewhere)
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 2.0]])
    assert torch.allclose(d.decode((a + b) / 2), torch.tensor([[4.0, 1.0]]))
    assert torch.allclose((d.decode(a) + d.decode(b)) / 2, torch.tensor([[5.0, 2.0]]))


# --- the real model -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(store, model):
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: model)
    task = ConceptErasure(ks=(1, 4), n_train=16, n_test=8, n_genre_train=4, n_genre_test=2, n_damage_contexts=5)
    task.prepare(ctx)
    return task, ctx


@pytest.fixture(scope="module")
def neurons_out(prepared):
    task, ctx = prepared
    eye = torch.eye(ctx.store.d_model)
    return task.evaluate(LinearDictionary.from_matrices(eye, eye), ctx)


def test_the_model_knows_the_pronoun_and_leace_removes_what_a_probe_reads(prepared):
    task, _ = prepared
    clean = task.clean["pronoun"].summary()
    assert clean["behaviour"] > 0.6 and clean["probe"] > 0.7
    lea = task.baselines["pronoun"]["leace"].summary()
    assert lea["probe"] < clean["probe"] and lea["kl"] > 0 and lea["edit"] > 0


def test_ablating_nothing_changes_nothing(prepared):
    task, ctx = prepared
    eye = torch.eye(ctx.store.d_model)
    d = LinearDictionary.from_matrices(eye, eye)
    none = FeatureAblation(d, torch.tensor([], dtype=torch.long), torch.tensor([]))
    for c in task.concepts:
        out = task._measure(ctx, c, none).summary()
        clean = task.clean[c.name].summary()
        assert out["kl"] == 0.0 and out["ce_increase"] == 0.0 and out["edit"] == 0.0
        m = task._measure(ctx, c, none)  # identical distributions: KL exactly 0 before summary() clamps at 0
        assert (m.damage["kl"] == 0.0).all() and m.damage["tokens"].sum() > 0
        assert out["probe"] == clean["probe"] and out.get("behaviour") == clean.get("behaviour")


def test_damage_kl_is_kl_of_clean_to_edited_by_the_formula(prepared, model):
    """The damage KL of an edit is mean over the damage positions of KL(p_clean || p_edited) = sum_v p (log p - log q):
    recomputed here from the model's logits with the mean-difference edit spliced in at the kept positions. KL is
    asymmetric, so the other direction gives a different number (the check can tell them apart)."""
    task, ctx = prepared
    c = task.concepts[0]
    edit = MeanDifference(c.train.pool(c.train.x), c.train.label)  # the baseline prepare() measured
    tokens, keep = task._damage_tokens, task._damage_keep

    def splice(act):
        out = act.clone()
        out[keep] = edit(act[keep]).to(act.dtype)
        return out

    logp = F.log_softmax(model.logits(tokens).float(), -1).double()
    logq = F.log_softmax(model.logits(tokens, ctx.hook, splice).float(), -1).double()
    forward = float((logp.exp() * (logp - logq)).sum(-1).mean())
    backward = float((logq.exp() * (logq - logp)).sum(-1).mean())
    got = task.baselines[c.name]["mean_difference"].summary()["kl"]
    assert forward > 0 and got == pytest.approx(forward, rel=1e-3)
    assert abs(forward - backward) > 0.01 * forward and got != pytest.approx(backward, rel=1e-3)


def test_damage_contexts_are_spread_over_documents_away_from_the_genre_examples(prepared, store):
    task, _ = prepared
    cov = task.coverage["damage"]
    assert cov["n_contexts"] == cov["n_documents"] == 5 and cov["n_genres"] >= 2
    assert len(task._damage_docs) == 5 and task._damage_docs[0].startswith("doc/")
    genre_test = {f"doc/{store.eval.documents[d][0]}" for d in store.eval.doc()[
        genre_contexts(store.eval, 2, seed=0, tag="concept_erasure/genre/test")[0]]}
    assert genre_test and not genre_test & set(task._damage_docs)


def test_evaluate_reports_every_concept(prepared, neurons_out):
    task, _ = prepared
    out = neurons_out
    names = [c.name for c in task.concepts]
    assert names[:2] == ["pronoun", "number"]
    for name in names:
        assert f"{name}_erasure" in out.metrics and f"{name}_damage_kl" in out.metrics
        curve = out.details["concepts"][name]["curve"]
        assert [r["k"] for r in curve] == [1, 4] and len(curve[-1]["features"]) == 4
        # ablating 4 real features changes the activations, so the next-token distribution moves: KL > 0
        assert curve[-1]["top"]["kl"] > 0 and "leace" in out.details["concepts"][name]
    assert out.metrics["damage_kl"].value > 0 and "LEACE" in out.details["board_notes"][0]


def test_metrics_are_the_task_formulas_with_intervals_over_prompts_and_documents(prepared, neurons_out):
    """Metric.of's values are the summaries computed from the curves in details; units are prompts (probe and
    behaviour) and damage documents; every metric has an interval or a reason."""
    out = neurons_out
    per_concept = out.details["concepts"]
    means: dict[str, list[float]] = {}
    measure = {"erasure": ("probe", "top"), "erasure_random": ("probe", "random"),
               "behaviour_erasure": ("behaviour", "top"), "behaviour_erasure_random": ("behaviour", "random")}
    for name, d in per_concept.items():
        clean = d["clean"]
        want = {"damage_kl": np.mean([r["top"]["kl"] for r in d["curve"]])}
        for key, (what, which) in measure.items():
            if what in clean:  # mean over k of the share of the clean above-chance score removed
                want[key] = np.mean([(clean[what] - r[which][what]) / (clean[what] - 0.5) for r in d["curve"]])
        for key, value in want.items():
            metric = out.metrics[f"{name}_{key}"]
            if key in measure and clean[measure[key][0]] - 0.5 <= 0.05:
                assert metric.value is None and metric.interval_info.reason
                continue
            assert metric.value == pytest.approx(value, abs=1e-9), (name, key)
            means.setdefault(key, []).append(value)
            unit = "document" if key == "damage_kl" else "prompt"
            assert metric.evidence.unit == unit and metric.interval_info.n == (5 if unit == "document" else 8)
    for key, values in means.items():
        assert out.metrics[key].value == pytest.approx(np.mean(values), abs=1e-9), key
    for name, metric in out.metrics.items():
        assert metric.interval is not None or metric.interval_info.reason, name
    assert out.metrics["damage_kl"].interval is not None
    # the reference edits carry intervals too, over the same units
    lea = per_concept["pronoun"]["leace"]
    for key in ("probe", "behaviour", "kl", "erasure"):
        iv = lea["intervals"][key]
        assert iv["interval"] is not None or iv["interval_info"]["reason"], key
    assert lea["intervals"]["kl"]["interval_info"]["unit"] == "document"
    assert lea["intervals"]["kl"]["interval"][0] <= lea["kl"] <= lea["intervals"]["kl"]["interval"][1]


def test_leace_and_diffmean_are_reference_metrics_over_the_same_units(prepared, neurons_out):
    """The reference edits' figures in details are metrics too (`<concept>_diffmean_erasure`, means over concepts
    `leace_erasure`, ...), with the methods' units, and `details["references"]` puts each beside the method column
    it is a bar for."""
    out = neurons_out
    means: dict[str, list[float]] = {}
    for name, d in out.details["concepts"].items():
        for baseline, prefix in (("leace", "leace"), ("mean_difference", "diffmean")):
            ref = d[baseline]
            for key, figure in (("erasure", "erasure"), ("behaviour_erasure", "behaviour_erasure"), ("damage_kl", "kl")):
                metric = out.metrics.get(f"{name}_{prefix}_{key}")
                if key == "behaviour_erasure" and "behaviour" not in ref:
                    assert metric is None  # genre has no answer to erase
                    continue
                if figure not in ref:  # the clean probe / model at chance: nothing to erase, and the metric says so
                    assert metric.value is None and metric.interval_info.reason, (name, prefix, key)
                    continue
                assert metric.value == pytest.approx(ref[figure], abs=1e-9), (name, prefix, key)
                assert metric.evidence.ids == out.metrics[f"{name}_{key}"].evidence.ids  # paired with the methods
                means.setdefault(f"{prefix}_{key}", []).append(ref[figure])
    assert set(means) >= {"leace_erasure", "diffmean_erasure", "leace_damage_kl", "diffmean_damage_kl"}
    for key, values in means.items():
        assert out.metrics[key].value == pytest.approx(np.mean(values), abs=1e-9), key
    refs = out.details["references"]
    assert refs["diffmean"]["metrics"]["erasure"] == "diffmean_erasure"
    assert refs["leace"]["metrics"]["pronoun_behaviour_erasure"] == "pronoun_leace_behaviour_erasure"
    assert all(col in out.metrics and m in out.metrics for r in refs.values() for col, m in r["metrics"].items())
    assert "DiffMean" in out.details["board_notes"][0]


def test_two_dictionaries_are_scored_on_the_same_units(prepared, neurons_out):
    task, ctx = prepared
    d = ctx.store.d_model
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))
    other = task.evaluate(LinearDictionary.from_matrices(q.T.contiguous(), q.T.contiguous()), ctx)
    for name, metric in neurons_out.metrics.items():
        if metric.evidence is not None:
            assert other.metrics[name].evidence.ids == metric.evidence.ids, name
    assert other.metrics["damage_kl"].value != neurons_out.metrics["damage_kl"].value
    for name in ("leace_erasure", "diffmean_erasure", "diffmean_damage_kl", "pronoun_diffmean_behaviour_erasure"):
        assert other.metrics[name].value == neurons_out.metrics[name].value, name  # references: dictionary-free
