"""disentanglement: the city file rebuilds from its sources, the formulas on cases known by construction (a planted
linear toy), answer decoding, and the task on the real model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.dictionary import LinearDictionary
from bench.errors import BenchError
from tasks.base import TaskContext
from tasks.disentanglement import Disentanglement
from tasks.disentanglement.cities import ATTRIBUTES, TEMPLATES, Answers, build_prompts, load_cities
from tasks.disentanglement.interchange import (FeaturePatch, SubspacePatch, between_ss, cause_isolation,
                                               choose_features, diffmean_basis, feature_scores, sample_pairs,
                                               write_norms)

ROOT = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location("build_cities", ROOT / "scripts" / "build_cities.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the data file ---------------------------------------------------------------------------------------------
def test_city_file_rebuilds_byte_identically_from_the_debian_sources():
    b = _builder()
    if not all(p.exists() for p in (b.ZONE1970, b.TZDATA_ZI, b.ISO3166, b.ISO_PC)):
        pytest.skip("tzdata / iso-codes are not installed here")
    shipped = (ROOT / "tasks" / "disentanglement" / "cities.tsv").read_bytes()
    assert b.build() == shipped


def test_city_rules():
    b = _builder()
    assert b.continent("America/Argentina/Buenos_Aires", "AR") == "South America"
    assert b.continent("America/Chicago", "US") == "North America"
    assert b.continent("Pacific/Honolulu", "US") is None  # ocean areas are left out
    cities = load_cities()
    assert len(cities) > 200 and len(set(cities.city)) == len(cities)
    row = {c: (k, n) for c, k, n in zip(cities.city, cities.country, cities.continent, strict=True)}
    assert row["Paris"] == ("France", "Europe") and row["Buenos Aires"] == ("Argentina", "South America")
    assert row["Moscow"] == ("Russia", "Europe") and row["Seoul"] == ("South Korea", "Asia")
    assert set(cities.continent) == {"Africa", "Asia", "Australia", "Europe", "North America", "South America"}
    assert all(cities.values("country")[i] == v for i, v in zip(cities.labels("country"), cities.country, strict=True))


# --- formulas ----------------------------------------------------------------------------------------------------
def test_sums_of_squares_and_scores_on_a_nested_example():
    continent = np.array([0, 0, 1, 1])
    country = np.array([0, 1, 2, 3])
    # columns: pure continent (SS 1), pure country-within-continent (SS 1), both (SS 5: 4 between continents, 1
    # between the countries of a continent)
    codes = np.array([[0, 0, 0], [0, 1, 1], [1, 0, 2], [1, 1, 3]], dtype=float)
    np.testing.assert_allclose(between_ss(codes, continent), [1, 0, 4])
    np.testing.assert_allclose(between_ss(codes, country), [1, 1, 5])
    np.testing.assert_allclose(feature_scores(codes, continent, country, None), np.array([1, -1, 3]) / 4)
    np.testing.assert_allclose(feature_scores(codes, country, continent, continent), np.array([0, 1, 1]) / 4)
    assert choose_features(codes, continent, country, None, 2).tolist() == [2, 0]
    # a feature that writes 3x as far carries 9x the variance
    np.testing.assert_allclose(feature_scores(codes, country, continent, continent, np.array([1, 3, 1])),
                               np.array([0, 9, 1]) / 4)
    assert choose_features(np.c_[codes, np.zeros(4)], country, continent, continent, 9).tolist() == [1, 2, 0]


def test_write_norms_read_the_decoder():
    decoder = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    d = LinearDictionary.from_matrices(torch.eye(2), decoder, bias=torch.tensor([1.0, -1.0]), signed=True)
    np.testing.assert_allclose(write_norms(d).numpy(), [5, 2, 5, 2])


def test_sample_pairs_respect_the_scheme():
    a = np.array([0, 0, 1, 1, 2, 2])
    b = np.array([0, 1, 0, 1, 0, 1])
    everyone = np.arange(6)
    same = sample_pairs(everyone, a, b, True, 5, np.random.default_rng(0))
    assert len(same) == 12 and (a[same.base] != a[same.source]).all() and (b[same.base] == b[same.source]).all()
    other = sample_pairs(everyone, a, b, False, 1, np.random.default_rng(0))
    assert len(other) == 6 and (a[other.base] != a[other.source]).all() and (b[other.base] != b[other.source]).all()


def _toy(seed: int = 0, noise: float = 0.1):
    """Entities on every (a, b) of 4 x 3 values, twice: x = U[a] + V[b] + noise in the other directions, with
    U, V, W orthonormal rows in 16 dimensions; readouts are the argmax of x @ U.T and x @ V.T."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=g))[0].T  # orthonormal rows
    u, v, w = basis[:4], basis[4:7], basis[7:]
    a = np.repeat(np.arange(4), 3).repeat(2)
    b = np.tile(np.arange(3), 4).repeat(2)
    x = u[a] + v[b] + noise * torch.randn(len(a), 9, generator=g) @ w
    read = {"a": lambda rows, z, want: (z @ u.T).argmax(-1).numpy(),
            "b": lambda rows, z, want: (z @ v.T).argmax(-1).numpy()}
    return x, a, b, basis, read


def _interchange(edits, x, a, b, read):
    """Cause and isolation `[E, P]` of the edits on the toy's pairs (B differs within a pair)."""
    pairs = sample_pairs(np.arange(len(a)), a, b, False, 3, np.random.default_rng(1))
    return cause_isolation(pairs, edits, (x, pairs.base, pairs.source, read["a"]),
                           (x, pairs.base, pairs.source, read["b"]), a, b)


def test_planted_dictionary_has_perfect_cause_and_isolation_at_every_k_that_covers_them():
    x, a, b, basis, read = _toy()
    planted = LinearDictionary.from_matrices(basis, basis, signed=False)
    ranked = choose_features(planted.encode(x).double().numpy(), a, b, None, 16, write_norms(planted).numpy())
    assert sorted(ranked[:4].tolist()) == [0, 1, 2, 3]  # U's directions first, then the noise's, V's last
    assert sorted(ranked[-3:].tolist()) == [4, 5, 6]
    ks = (4, 8, 13, 16)  # 13: U and every noise direction; 16: V's too, i.e. the whole activation
    cause, isolation = _interchange([FeaturePatch(planted, ranked[:k]) for k in ks], x, a, b, read)
    assert cause.shape == (4, 72)  # 24 entities, 3 sources each
    assert cause[:3].all() and isolation[:3].all()
    # patching B's directions too moves B to the source's (B differs in every pair): no isolation left
    assert cause[3].all() and not isolation[3].any()
    # the same k patched through a rotated dictionary mixes A with B and the noise: worse
    rot = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(5)))[0]
    rotated = LinearDictionary.from_matrices(rot.T @ basis, rot.T @ basis, signed=True)
    ranked = choose_features(rotated.encode(x).double().numpy(), a, b, None, 8, write_norms(rotated).numpy())
    cause, isolation = _interchange([FeaturePatch(rotated, ranked[:k]) for k in (4, 8)], x, a, b, read)
    assert (0.5 * (cause.mean(1) + isolation.mean(1)) < 0.8).all()


def test_diffmean_baseline_spans_the_attribute():
    x, a, b, basis, read = _toy()
    q = diffmean_basis(x.numpy(), a, None, 16)
    assert q.shape == (16, 3)  # 4 class means span 3 directions
    np.testing.assert_allclose((q.T @ q).numpy(), np.eye(3), atol=1e-5)
    cause, isolation = _interchange([SubspacePatch(q)], x, a, b, read)
    assert cause.all() and isolation.all()
    # within strata (B's classes), the class means less their stratum's mean lead with the same A directions
    # (noise-free, so that the span is exact)
    x, a, b, basis, _ = _toy(noise=0.0)
    q = diffmean_basis(x.numpy(), a, b, 16)
    u = basis[:4] - basis[:4].mean(0)
    assert q.shape == (16, 3)
    torch.testing.assert_close(u @ q @ q.T, u, atol=1e-5, rtol=0)


def test_a_patch_that_changes_nothing_has_no_cause_and_full_isolation():
    x, a, b, _, read = _toy()
    cause, isolation = _interchange([lambda base, source: base], x, a, b, read)
    assert not cause.any() and isolation.all()


# --- decoding ----------------------------------------------------------------------------------------------------
def test_constrained_decoding_tells_apart_values_sharing_a_first_token():
    vocab = {"United": 0, "States": 1, "Kingdom": 2, "Niger": 3, "ia": 4, "France": 5, ".": 6}

    def tokenize(text: str) -> list[int]:
        return [i for w in text.split() for i in ([3, 4] if w == "Nigeria" else [vocab[w]])]

    ans = Answers(("France", "Niger", "Nigeria", "United Kingdom", "United States"), tokenize)
    assert ans.first_tokens_shared() == 4

    def logits(best: int, then: int | None = None) -> torch.Tensor:
        out = torch.zeros(7)
        out[best] = 2.0
        if then is not None:
            out[then] = 1.0
        return out

    assert ans.step((), logits(5)) == ((5,), 0)  # France: one step
    assert ans.step((), logits(6, 0)) == ((0,), None)  # "." is not an answer: the best of the allowed, United
    assert ans.step((0,), logits(2)) == ((0, 2), 3)
    assert ans.step((3,), logits(6, 4)) == ((3,), 1)  # greedy says "." after Niger: the answer ends, Niger
    assert ans.step((3,), logits(4)) == ((3, 4), 2)  # greedy continues: Nigeria
    # the readout stops once the wanted value is ruled out by the tokens chosen so far
    assert ans.starts(3, (0,)) and ans.starts(4, (0,)) and not ans.starts(0, (0,)) and ans.starts(2, (3,))


# --- the real model ----------------------------------------------------------------------------------------------
def test_prompts_share_the_city_activation_across_templates(model):
    cities = load_cities()
    picks = np.array([cities.city.index(c) for c in ("Paris", "Buenos Aires", "Tokyo")])
    rows = {a: build_prompts(TEMPLATES[a], list(cities.city), picks, model.tokenize, None, 0) for a in ATTRIBUTES}
    p = rows["country"]
    assert len(p.entity) == 2 * len(picks)
    for i in range(len(p.entity)):
        last = model.tokenizer.decode(p.tokens[i, p.position[i]])
        assert cities.city[p.entity[i]].endswith(last.strip())
    hook = "blocks.6.hook_resid_post"
    x = {a: model.activations(r.tokens, hook)[torch.arange(len(r.entity)), r.position] for a, r in rows.items()}
    torch.testing.assert_close(x["country"], x["continent"], rtol=1e-4, atol=1e-3)


@pytest.fixture(scope="module")
def task_ctx(model, store):
    # 60 cities (the prepare's forward passes grow with them): SmolLM2 knows both attributes of about 20
    task = Disentanglement(ks=(2, 4), n_sources=1, max_test=12, n_cities=60)
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: model)
    task.prepare(ctx)
    return task, ctx


def test_task_on_the_real_model(task_ctx, model):
    task, ctx = task_ctx
    known = task.details["known"]
    assert task.details["cities"] == 60
    assert known["both"] >= 10, known  # SmolLM2 knows some cities' country and continent
    assert known["both"] <= min(known["country"], known["continent"])
    d = model.d_model
    neurons = LinearDictionary.from_matrices(torch.eye(d), torch.eye(d))
    out = task.evaluate(neurons, ctx)
    m = {key: metric.value for key, metric in out.metrics.items()}
    for key in ("cause", "isolation", "score", "country_score", "continent_cause", "diffmean_score", "score_k2",
                "country_cause_k4", "diffmean_isolation_k2"):
        assert 0 <= m[key] <= 1, key
        assert out.metrics[key].evidence.unit == "base city"
    # the headline figures are means over k (and over the attributes), each k's over the attributes
    for p in ("", "diffmean_"):
        for key in ("cause", "isolation", "score"):
            assert m[f"{p}{key}"] == pytest.approx(0.5 * (m[f"{p}{key}_k2"] + m[f"{p}{key}_k4"]))
            assert m[f"{p}{key}"] == pytest.approx(0.5 * (m[f"{p}country_{key}"] + m[f"{p}continent_{key}"]))
            for k in (2, 4):
                assert m[f"{p}{key}_k{k}"] == pytest.approx(
                    0.5 * (m[f"{p}country_{key}_k{k}"] + m[f"{p}continent_{key}_k{k}"]))
        assert m[f"{p}score_k4"] == pytest.approx(0.5 * (m[f"{p}cause_k4"] + m[f"{p}isolation_k4"]))
    # a dictionary none of whose codes vary patches nothing: no cause, and the kept cities' other attribute stays
    silent = LinearDictionary.from_matrices(torch.zeros(8, d), torch.randn(8, d), signed=False)
    still = task.evaluate(silent, ctx)
    for k in ("", "_k2", "_k4"):
        assert still.metrics[f"cause{k}"].value == 0 and still.metrics[f"isolation{k}"].value == 1
    # units are the data's (base cities), the same for every dictionary: the leaderboard pairs methods on them
    assert still.metrics["score"].evidence.ids == out.metrics["score"].evidence.ids
    assert still.metrics["diffmean_score"].value == out.metrics["diffmean_score"].value
    assert len(out.details["features"]["country"]) == 4  # ranked once, for the largest k
    assert set(out.details["per_attribute"]["continent"]) == {"2", "4"}


def test_ks_must_not_be_empty():
    with pytest.raises(BenchError, match="ks needs at least one value"):
        Disentanglement(ks=())


def test_too_few_known_cities_give_empty_metrics_with_the_reason(model, store):
    task = Disentanglement(n_cities=3)
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: model)
    task.prepare(ctx)
    out = task.evaluate(LinearDictionary.from_matrices(torch.eye(model.d_model), torch.eye(model.d_model)), ctx)
    assert "too few" in out.details["problem"]
    assert {"score", "score_k64", "country_cause_k256", "diffmean_isolation_k64"} <= set(out.metrics)
    assert all(m.value is None and "too few" in m.interval_info.reason for m in out.metrics.values())
