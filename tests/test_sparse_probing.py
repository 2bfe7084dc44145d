"""sparse_probing: feature selection and probe scoring on cases with known answers, then the task on real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from bench.dictionary import LinearDictionary
from bench.errors import BenchError
from reports.leaderboard import build_leaderboards, to_markdown
from reports.report import schema
from tasks.base import TaskContext
from tasks.ioi.dataset import NAMES, repeated_names
from tasks.probing import Scored, accuracy_evidence, auroc_evidence, diffmean, fit_probe, probe, top_features
from tasks.prompts import single_tokens
from tasks.sparse_probing import ProbeSet, SparseProbing, _pool


def test_top_features_finds_the_separating_feature():
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2 == 0
    codes = rng.normal(size=(200, 6))
    codes[:, 4] += 3.0 * y  # feature 4 separates the classes, feature 1 a little
    codes[:, 1] += 0.5 * y
    assert top_features(codes, y, 2).tolist() == [4, 1]


def test_probe_auroc_is_one_on_separable_data_and_half_on_noise():
    rng = np.random.default_rng(0)
    y = np.arange(400) % 2 == 0
    x = rng.normal(size=(400, 3)) + 4.0 * y[:, None]
    assert probe(x[:200], y[:200], x[200:], y[200:], 1.0) == (1.0, 1.0)
    noise = rng.normal(size=(400, 3))
    auroc, accuracy = probe(noise[:200], y[:200], noise[200:], y[200:], 1.0)
    assert abs(auroc - 0.5) < 0.15 and abs(accuracy - 0.5) < 0.15


def test_the_probe_is_class_balanced():
    """On a 9:1 prior with a weak signal an unweighted probe calls (almost) everything the majority class; the
    class-balanced one still finds most of the minority class."""
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.1
    x = rng.normal(size=(2000, 1)) + 1.0 * y[:, None]
    r = fit_probe(x[:1000], y[:1000], x[1000:], y[1000:], 1.0)
    assert r.pred[r.label].mean() > 0.5  # minority recall
    assert r.accuracy == pytest.approx(balanced_accuracy_score(r.label, r.pred))


def test_evidence_reproduces_auroc_and_balanced_accuracy_by_hand():
    """Two problems on overlapping units: AUROC per problem by hand (pairs ranked right, ties half), weighted."""
    a = Scored(["u0", "u1", "u2", "u3"], np.array([1, 1, 0, 0], bool), np.array([0.9, 0.2, 0.5, 0.2]),
               np.array([1, 0, 1, 0], bool), weight=1.0)
    b = Scored(["u2", "u3", "u4"], np.array([1, 0, 0], bool), np.array([0.1, 0.3, 0.0]),
               np.array([1, 1, 0], bool), weight=3.0)
    # a: pairs (0.9 > 0.5, 0.9 > 0.2, 0.2 < 0.5, 0.2 = 0.2) -> (1 + 1 + 0 + 0.5) / 4; b: (0.1 < 0.3, 0.1 > 0.0) -> 1/2
    ev = auroc_evidence([a, b], "prompt")
    assert ev.ids == ["u0", "u1", "u2", "u3", "u4"]
    assert ev.value() == pytest.approx((1.0 * 2.5 / 4 + 3.0 * 0.5) / 4.0)
    assert roc_auc_score(a.label, a.score) == pytest.approx(2.5 / 4) and roc_auc_score(b.label, b.score) == 0.5
    # balanced accuracy: a (1/2 + 1/2) / 2 = 1/2; b (1/1 + 1/2) / 2 = 3/4
    acc = accuracy_evidence([a, b], "prompt")
    assert acc.value() == pytest.approx((1.0 * 0.5 + 3.0 * 0.75) / 4.0)
    assert balanced_accuracy_score(b.label, b.pred) == 0.75
    with pytest.raises(ValueError, match="one example per unit"):
        auroc_evidence([Scored(["d", "d"], np.array([1, 0], bool), np.zeros(2), np.zeros(2, bool))], "document")


def test_accuracy_evidence_sums_a_units_examples():
    """A document holding two contexts is one unit: its examples add to num and den, so the value is still the
    balanced accuracy over examples, and a resample draws the document's examples together."""
    p = Scored(["d0", "d0", "d1", "d2", "d3"], np.array([1, 1, 1, 0, 0], bool), np.zeros(5),
               np.array([1, 0, 1, 0, 1], bool))
    ev = accuracy_evidence([p], "document")
    assert ev.n == 4 and ev.columns["den"][0].tolist() == [0.0, 2.0]  # d0: two positives, one right
    assert ev.value() == pytest.approx(balanced_accuracy_score(p.label, p.pred)) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_pool_means_each_examples_tokens():
    examples = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[5.0, 6.0]])]
    assert _pool(examples, lambda x: 2 * x).tolist() == [[4.0, 6.0], [10.0, 12.0]]


def _planted_task(n_train: int = 200, n_test: int = 200, d: int = 4) -> tuple[SparseProbing, TaskContext]:
    """Two one-token concepts known by construction, on d-dimensional activations (under the task's concept names):
    `pronoun` is planted: dimension 0 is +1 for the positives and -1 for the negatives (noise 0.05), the other
    dimensions are N(0, 1) noise that ignores the label; in `number` every example is the same vector, so nothing
    can tell its classes apart."""
    g = torch.Generator().manual_seed(0)
    sets = {}
    for concept in ("pronoun", "number"):
        split = {}
        for which, n in (("train", n_train), ("test", n_test)):
            y = np.arange(n) % 2 == 1
            if concept == "pronoun":
                x = torch.randn(n, d, generator=g)
                x[:, 0] = torch.from_numpy(np.where(y, 1.0, -1.0)).float() + 0.05 * torch.randn(n, generator=g)
            else:
                x = torch.ones(n, d)
            split[which] = ([row[None] for row in x], y)
        (train, y_train), (test, y_test) = split["train"], split["test"]
        sets[concept] = ProbeSet(train, test, {concept: (y_train, y_test)}, [f"{concept}/{i}" for i in range(n_test)])
    task = SparseProbing(ks=(1,), concepts=tuple(sets))
    # what prepare() leaves, on these sets: the examples and the references (dense probe, DiffMean) on them
    task._sets = sets
    task._fit_references(seed=0)
    return task, TaskContext(store=None, hook="planted", model_loader=lambda: None)


def test_planted_feature_gives_auroc_one_and_a_blind_dictionary_chance():
    task, ctx = _planted_task()
    eye = torch.eye(4)
    m = {k: v.value for k, v in task.evaluate(LinearDictionary.from_matrices(eye, eye), ctx).metrics.items()}
    # the identity dictionary has relu(x_0) and relu(-x_0) among its codes: one of them separates `pronoun` exactly
    assert m["pronoun_auroc_k1"] == 1.0 and m["pronoun_dense_auroc"] == 1.0 and m["pronoun_diffmean_auroc"] == 1.0
    # identical examples: every score ties, so AUROC and balanced accuracy are exactly chance
    assert m["number_auroc_k1"] == 0.5 and m["number_dense_auroc"] == 0.5 and m["number_diffmean_auroc"] == 0.5
    # the headline numbers are means over the concepts: (1 + 1/2) / 2
    assert m["auroc_k1"] == pytest.approx(0.75) and m["accuracy_k1"] == pytest.approx(0.75)
    assert m["dense_auroc"] == pytest.approx(0.75)
    # a dictionary blind to dimension 0 (its features read only the label-free noise): chance on `pronoun`, while
    # the dense bar, which does not depend on the dictionary, stays at 1
    blind = torch.eye(4)[1:]
    b = {k: v.value for k, v in task.evaluate(LinearDictionary.from_matrices(blind, blind), ctx).metrics.items()}
    assert abs(b["pronoun_auroc_k1"] - 0.5) < 0.1 and abs(b["accuracy_k1"] - 0.5) < 0.1
    assert b["pronoun_dense_auroc"] == 1.0 and b["pronoun_diffmean_auroc"] == 1.0


def _mirrored(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x `[n, 3]`, y `[n]`: dimension 0 is planted (+1 / -1 by label, noise 0.1); dimensions 1 and 2 are blind by
    construction: the positives and the negatives hold the very same values there (mirrored), so any direction in
    them ranks each positive against an identical negative for every positive: AUROC exactly 1/2."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2 == 1
    blind = rng.normal(size=(n // 2, 2))
    x = np.zeros((n, 3))
    x[y, 1:], x[~y, 1:] = blind, blind
    x[:, 0] = np.where(y, 1.0, -1.0) + 0.1 * rng.normal(size=n)
    return x, y


def test_diffmean_finds_the_planted_direction_and_a_blind_direction_is_chance():
    (x_train, y_train), (x_test, y_test) = _mirrored(seed=0), _mirrored(seed=1)
    r = diffmean(x_train, y_train, x_test, y_test)
    assert r.auroc == 1.0 and r.accuracy == 1.0
    # the class means differ only along dimension 0 (the blind dimensions' means are equal), so w is e_0 times 2ish
    w = x_train[y_train].mean(0) - x_train[~y_train].mean(0)
    assert w[1:] == pytest.approx([0.0, 0.0], abs=1e-12) and w[0] == pytest.approx(2.0, abs=0.1)
    assert np.allclose(r.score, x_test @ w)
    for blind in (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.6, -0.8])):
        assert roc_auc_score(y_test, x_test @ blind) == pytest.approx(0.5, abs=1e-12)
    # train examples all alike: the class means are equal, w = 0, every test score ties
    same = np.tile(x_train[:1], (40, 1))
    assert diffmean(same, y_train, x_test, y_test).auroc == 0.5


def test_the_best_single_feature_of_a_dictionary_holding_the_planted_direction_reaches_diffmean():
    """The planted direction v is not a basis axis: DiffMean finds it (AUROC 1); a dictionary of random directions
    plus v has v's code as its best single feature, AUROC 1 = DiffMean's; the same dictionary without v does worse."""
    d, n = 8, 200
    g = np.random.default_rng(0)
    v = g.normal(size=d)
    v /= np.linalg.norm(v)
    sets = {}
    for concept in ("pronoun",):
        split = {}
        for which in ("train", "test"):
            y = np.arange(n) % 2 == 1
            noise = g.normal(size=(n, d))
            noise -= np.outer(noise @ v, v)  # the label-free part lies off v
            x = noise + np.outer(np.where(y, 1.0, -1.0), v)
            split[which] = ([torch.from_numpy(row[None]).float() for row in x], y)
        (train, y_train), (test, y_test) = split["train"], split["test"]
        sets[concept] = ProbeSet(train, test, {concept: (y_train, y_test)}, [f"{concept}/{i}" for i in range(n)])
    task = SparseProbing(ks=(1,), concepts=("pronoun",))
    task._sets = sets
    task._fit_references(seed=0)
    ctx = TaskContext(store=None, hook="planted", model_loader=lambda: None)
    others = torch.from_numpy(g.normal(size=(5, d))).float()
    with_v = torch.cat([others, torch.from_numpy(v[None]).float()])
    m = {k: x.value for k, x in task.evaluate(LinearDictionary.from_matrices(with_v, with_v), ctx).metrics.items()}
    assert m["pronoun_diffmean_auroc"] == 1.0 and m["pronoun_auroc_k1"] == 1.0
    blind_out = task.evaluate(LinearDictionary.from_matrices(others, others), ctx)
    without = {k: x.value for k, x in blind_out.metrics.items()}
    assert without["pronoun_auroc_k1"] < 0.99 and without["pronoun_diffmean_auroc"] == 1.0
    # on the leaderboard DiffMean is one reference row in the best-feature column, ranked with the methods: the
    # dictionary holding v ties with it (AUROC 1 in every resample: p = 1), the one without v is significantly worse
    outs = {"with-v": task.evaluate(LinearDictionary.from_matrices(with_v, with_v), ctx), "without-v": blind_out}
    (board,) = build_leaderboards([_record(m, o) for m, o in outs.items()], list(outs))
    col = next(c for c in board.columns if c.metric == "auroc_k1")
    groups = {r.method: board.rank(r, col) for r in board.rows}
    assert groups == {"with-v": 1, "without-v": 2, "dense probe (supervised reference)": 1,
                      "diffmean (supervised reference)": 1}


def _record(method: str, out, seed: int = 0) -> dict:
    """A result record of sparse_probing as the runner writes it (the fields the leaderboard reads)."""
    return {"model": "m", "hook": "h", "method": method, "task": "sparse_probing", "sparse": False, "matched_k": None,
            "seed": seed, "metrics": {k: m.to_json() for k, m in out.metrics.items()}, "details": out.details}


def test_a_one_feature_probe_ranks_as_the_raw_feature_signed_by_its_train_mean_difference():
    """Why `auroc_k1` is the best feature's own AUROC (AxBench's detection score) and no second metric is needed: a
    class-balanced L2 logistic regression on one feature has the sign of the train class-mean difference, so its
    test scores order the examples as the signed raw code does, ties included; here on a weak, noisy feature whose
    AUROC is far from 0 and 1, with both signs."""
    rng = np.random.default_rng(0)
    y = rng.random(600) < 0.3
    for sign in (1.0, -1.0):
        x = np.round(rng.normal(size=(600, 1)) + sign * 0.7 * y[:, None], 1)  # rounded: ties in the code
        r = fit_probe(x[:300], y[:300], x[300:], y[300:], 1.0)
        raw = np.sign(x[:300][y[:300]].mean() - x[:300][~y[:300]].mean()) * x[300:, 0]
        assert 0.6 < r.auroc < 0.9
        assert r.auroc == roc_auc_score(y[300:], raw)


def test_repeated_names_differ_only_in_whether_the_name_was_said_before(model):
    bos = model.tokenizer.bos_token_id
    rn = repeated_names(12, model.tokenize, seed=3, bos=bos, pad=0)
    ids = set(single_tokens(NAMES, model.tokenize).values())
    assert rn.label.tolist() == [False, True] * 6
    for row, n, pos, label in zip(rn.tokens, rn.length, rn.position, rn.label, strict=True):
        name = int(row[pos])
        assert name in ids and pos < n
        said_before = name in row[:pos].tolist()
        assert said_before == bool(label)
        assert sum(int(t) in ids for t in row[:pos]) == 2  # two names in the first clause on both sides
    # the same template puts the name at the same place on both sides of a pair
    assert (rn.position[0::2] == rn.position[1::2]).all()


def test_unknown_concept_is_a_one_line_error(store):
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: None)
    with pytest.raises(BenchError, match="unknown concept"):
        SparseProbing(concepts=("genre", "colour")).prepare(ctx)


@pytest.fixture(scope="module")
def probed(store, model):
    task = SparseProbing(ks=(1, 2 * store.d_model), n_train_contexts=48, n_eval_contexts=16, min_examples=2,
                         n_train_prompts=160, n_test_prompts=80)
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: model)
    task.prepare(ctx)
    eye = torch.eye(store.d_model)
    return task, ctx, task.evaluate(LinearDictionary.from_matrices(eye, eye), ctx)


def test_on_real_activations_all_codes_match_the_dense_probe(probed, store):
    """With every code of the identity dictionary the probe sees what the dense probe sees (x = c+ - c-), for every
    concept; and the real model knows each token-level concept (dense AUROC well above chance)."""
    task, _, out = probed
    assert set(task._sets) == {"genre", "pronoun", "number", "repeated_name"}
    assert len(task._sets["genre"].problems) >= 2
    m = {k: v.value for k, v in out.metrics.items()}
    for concept in task._sets:
        assert m[f"{concept}_auroc_k{2 * store.d_model}"] == pytest.approx(m[f"{concept}_dense_auroc"], abs=0.1)
    for concept in ("pronoun", "number", "repeated_name"):
        assert m[f"{concept}_dense_auroc"] > 0.75, concept


def test_a_dictionary_that_reads_nothing_is_at_chance_on_real_data(probed, store):
    """Codes that are all zero tie every test example: AUROC and balanced accuracy exactly 1/2 for every concept and
    k, on the real task; the dense probe, which never sees the dictionary, is unchanged."""
    task, ctx, out = probed
    zero = torch.zeros(store.d_model, store.d_model)
    blank = task.evaluate(LinearDictionary.from_matrices(zero, torch.eye(store.d_model)), ctx).metrics
    for name, metric in blank.items():
        if "dense" in name or "diffmean" in name:
            assert metric.value == out.metrics[name].value, name
        else:
            assert metric.value == pytest.approx(0.5, abs=1e-12), name


def test_metrics_are_the_means_of_the_per_problem_scores_with_intervals(probed, store):
    """Metric.of's value is the task's own number: the mean over concepts of the mean over its problems."""
    task, _, out = probed
    pp = out.details["per_problem"]
    concept_mean = {c: {key: {s: np.mean([pp[c][p][key][s] for p in pp[c]]) for s in ("auroc", "accuracy")}
                        for key in next(iter(pp[c].values()))} for c in pp}
    assert set(concept_mean["pronoun"]) == {"dense", "diffmean", "k1", f"k{2 * store.d_model}"}
    for key in concept_mean["pronoun"]:
        reference = key in ("dense", "diffmean")
        prefix = f"{key}_" if reference else ""
        suffix = "" if reference else f"_{key}"
        for stat in ("auroc", "accuracy"):
            want = np.mean([concept_mean[c][key][stat] for c in pp])
            assert out.metrics[f"{prefix}{stat}{suffix}"].value == pytest.approx(want, abs=1e-12), (key, stat)
        for c in pp:
            assert out.metrics[f"{c}_{prefix}auroc{suffix}"].value == pytest.approx(concept_mean[c][key]["auroc"])
    for name, metric in out.metrics.items():
        info = metric.interval_info
        assert info is not None and (metric.interval is not None or info.reason), name
        if metric.interval is not None:
            assert metric.interval[0] <= metric.value + 1e-12 and metric.value <= metric.interval[1] + 1e-12, name
    # token-level concepts: 80 prompts each, every one a unit of its own
    ev = out.metrics["pronoun_auroc_k1"].evidence
    assert ev.unit == "prompt" and ev.n == len(task._sets["pronoun"].test) and ev.ids[0].startswith("pronoun/")
    assert out.metrics["pronoun_dense_auroc"].interval is not None


def test_genre_contexts_are_spread_one_test_context_per_document(probed, store):
    task, _, out = probed
    genre = task._sets["genre"]
    assert len(set(genre.test_ids)) == len(genre.test_ids) == len(genre.test)  # one context per document
    cov = out.details["coverage"]["genre"]
    assert cov["test"]["n_documents"] == cov["test"]["n_contexts"] == min(16, len(set(store.eval.doc().tolist())))
    assert cov["train"]["n_genres"] >= 2 and cov["train"]["n_documents"] == len(set(store.train.doc().tolist()))
    assert out.metrics["genre_dense_auroc"].evidence.unit == "document"
    assert out.metrics["auroc_k1"].evidence.unit == "example"  # prompts and documents together


def test_two_dictionaries_are_scored_on_the_same_units(probed, store):
    """Pairing: the ids depend on the data only, so a different dictionary gets the same units."""
    task, ctx, out = probed
    d = store.d_model
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))
    other = task.evaluate(LinearDictionary.from_matrices(q.T.contiguous(), q.T.contiguous()), ctx)
    assert set(other.metrics) == set(out.metrics)
    for name, metric in out.metrics.items():
        assert other.metrics[name].evidence.ids == metric.evidence.ids, name
    assert other.metrics["auroc_k1"].value != out.metrics["auroc_k1"].value
    for name in ("diffmean_auroc", "pronoun_diffmean_auroc", "dense_auroc"):  # references: the same for both
        assert other.metrics[name].value == out.metrics[name].value, name


def test_the_leaderboard_shows_the_references_as_rows_not_as_columns_of_every_method(probed, store):
    """Two real dictionaries: DiffMean and the dense probe become one row each (in every codes group a method
    stands in), placed in the columns the task names, ranked there, marked as references in Markdown and in the
    report JSON (valid against the shipped schema); their own metrics are not repeated per method."""
    task, ctx, out = probed
    d = store.d_model
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(1)))
    other = task.evaluate(LinearDictionary.from_matrices(q.T.contiguous(), q.T.contiguous()), ctx)
    sae = {**_record("sae", other), "sparse": True, "matched_k": 8}  # a sparse method also stands in top-k
    (board,) = build_leaderboards([_record("neurons", out), sae], ["neurons", "sae"])
    assert [(r.method, r.group) for r in board.rows] == [
        ("neurons", "all"), ("sae", "all"), ("dense probe (supervised reference)", "all"),
        ("diffmean (supervised reference)", "all"), ("sae", "top-k"), ("dense probe (supervised reference)", "top-k"),
        ("diffmean (supervised reference)", "top-k")]
    rows = {(r.method, r.group): r for r in board.rows}
    ref = rows[("diffmean (supervised reference)", "all")]
    assert ref.reference == "supervised reference" and rows[("neurons", "all")].reference is None
    cols = {c.metric: c for c in board.columns}
    assert not {m for m in cols if "diffmean" in m or "dense" in m}
    assert {c.metric for c in ref.cells} == set(out.details["references"]["diffmean"]["metrics"]) == {
        "auroc_k1", "accuracy_k1", *(f"{c}_auroc_k1" for c in task._sets)}
    k1 = cols["auroc_k1"]
    assert ref.cells[k1].value == out.metrics["diffmean_auroc"].value
    assert rows[("dense probe (supervised reference)", "all")].cells[cols["auroc_k5" if "auroc_k5" in cols else
                                                                          f"auroc_k{2 * d}"]].value == \
        out.metrics["dense_auroc"].value
    assert all(board.rank(r, k1) is not None for r in board.rows)
    md = to_markdown([board])
    assert "| `diffmean (supervised reference)` | all |" in md
    jsonschema = pytest.importorskip("jsonschema")
    data = board.to_json()
    jsonschema.validate(data, {"$defs": schema()["$defs"], "$ref": "#/$defs/board"})
    refs = {r["method"]: r.get("reference") for r in data["rows"]}
    assert refs["diffmean (supervised reference)"] == "supervised reference" and refs["neurons"] is None
    # a reference must not depend on the dictionary: if two methods' records disagree, the board says so
    bad = _record("odd", other)
    bad["metrics"]["diffmean_auroc"] = {**bad["metrics"]["diffmean_auroc"], "value": 0.123}
    (board,) = build_leaderboards([_record("neurons", out), bad], ["neurons", "odd"])
    assert any("diffmean (supervised reference)" in n and "differs between methods" in n for n in board.notes)
