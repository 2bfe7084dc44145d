"""stability: agreement of directions across seeds, on cases whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.dictionary import LinearDictionary
from bench.errors import BenchError
from tasks.base import TaskContext
from tasks.stability import STATISTICS, Stability, agreement, lines


def _sae(directions: torch.Tensor) -> LinearDictionary:
    """A dictionary whose directions are the given rows (unsigned, like an SAE's decoder)."""
    return LinearDictionary.from_matrices(directions, directions, signed=False)


def _random(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)


def _run(dictionary, siblings, seed: int = 0):
    ctx = TaskContext(None, "hook", lambda: None, seed=seed, siblings=lambda: siblings)
    return Stability().evaluate(dictionary, ctx)


def _values(out) -> dict[str, float]:
    return {k: m.value for k, m in out.metrics.items()}


def test_a_dictionary_agrees_with_itself_and_with_its_rows_permuted():
    a = _random(64, 16, 0)
    for sibling in (a, a[torch.randperm(64, generator=torch.Generator().manual_seed(1))]):
        out = _run(_sae(a), [_sae(sibling)])
        for stat in STATISTICS:
            assert out.metrics[stat].value == pytest.approx(1.0, abs=1e-6), stat
        assert out.metrics["mean_max_cos"].evidence.ids == [str(i) for i in range(64)]
        # every direction agrees perfectly: no spread to put an interval on, and the reason says so
        assert out.metrics["shared_fraction"].interval is None
        assert "same value" in out.metrics["shared_fraction"].interval_info.reason


def test_signed_bases_are_cut_to_their_lines_so_sign_does_not_matter():
    a = _random(20, 20, 0)
    signed = LinearDictionary.from_matrices(a, a, signed=True)
    assert signed.d_dict == 40 and lines(signed).shape == (20, 20)
    flipped = -a[torch.arange(19, -1, -1)]  # every direction negated, order reversed
    out = _run(signed, [LinearDictionary.from_matrices(flipped, flipped, signed=True)])
    for stat in STATISTICS:
        assert out.metrics[stat].value == pytest.approx(1.0, abs=1e-6)
        assert out.metrics[stat].evidence.n == 20  # lines, not the 40 signed codes
    assert out.details["deduplicated_signs"] is True
    # Without the cut, a direction and its negation would compete for one partner: pw_mcc would be 0.5, not 1.
    assert lines(_sae(torch.cat([a, -a]))).shape == (20, 20)


def test_independent_random_directions_score_the_random_expectation():
    a, b = _random(256, 64, 10), _random(256, 64, 11)
    out = _values(_run(_sae(a), [_sae(b)]))
    for stat in ("mean_max_cos", "pw_mcc"):
        assert 0.2 < out[stat] < 0.5  # max |cos| of 256 random directions in 64 dimensions: far from 0 and 1
        assert out[stat] == pytest.approx(out[f"random_{stat}"], abs=0.02), stat
    assert out["shared_fraction"] == out["random_shared_fraction"] == 0.0


def test_half_the_directions_perturbed_lands_between_random_and_identical():
    a = _random(128, 64, 0)
    noise = _random(128, 64, 1)
    u = torch.nn.functional.normalize(noise - (noise * a).sum(1, keepdim=True) * a, dim=-1)  # orthogonal to a
    b = a.clone()
    b[:64] = 0.5 * a[:64] + 0.75**0.5 * u[:64]  # |cos| exactly 0.5 with the original, below the 0.7 threshold
    out = _values(_run(_sae(a), [_sae(b)]))
    for stat in ("mean_max_cos", "pw_mcc"):
        assert out[f"random_{stat}"] + 0.2 < out[stat] < 0.95, stat
    # the untouched half matches at 1, the perturbed half at 0.5 (random partners stay well below that)
    assert out["pw_mcc"] == pytest.approx(0.75, abs=1e-4)
    assert out["shared_fraction"] == 0.5


def test_hungarian_matching_beats_greedy_on_a_hand_computed_pair():
    # |cos| table (rows: a1, a2; columns: b1, b2):  0.9  0.6
    #                                                0.6  0.1
    # Greedy best-first takes a1-b1 (0.9) and is left with a2-b2 (0.1): mean 0.5. The best one-to-one matching is
    # a1-b2, a2-b1: mean 0.6. Max |cos| per row: 0.9, 0.6 -> 0.75. Nothing matched above 0.7 -> shared 0.
    gram = np.array([[1, .6, .9, .6], [.6, 1, .6, .1], [.9, .6, 1, .6], [.6, .1, .6, 1]])  # a1, a2, b1, b2
    v = torch.from_numpy(np.linalg.cholesky(gram)).float()  # rows with exactly these inner products
    a, b = v[:2], v[2:]
    np.testing.assert_allclose((a @ b.T).numpy(), [[0.9, 0.6], [0.6, 0.1]], atol=1e-6)
    per = agreement(a, b)
    np.testing.assert_allclose(per["pw_mcc"], [0.6, 0.6], atol=1e-6)
    np.testing.assert_allclose(per["mean_max_cos"], [0.9, 0.6], atol=1e-6)
    np.testing.assert_array_equal(per["shared_fraction"], [0.0, 0.0])
    out = _values(_run(_sae(a), [_sae(b)]))
    assert out["pw_mcc"] == pytest.approx(0.6, abs=1e-6) and out["mean_max_cos"] == pytest.approx(0.75, abs=1e-6)
    # with 2 directions there is no interval, and the metric says why
    assert _run(_sae(a), [_sae(b)]).metrics["pw_mcc"].interval_info.reason.startswith("2 features")


def test_a_larger_dictionary_leaves_rows_unmatched_at_zero():
    a = torch.eye(3)
    per = agreement(a, a[:2])
    np.testing.assert_allclose(per["pw_mcc"], [1, 1, 0])
    np.testing.assert_allclose(per["mean_max_cos"], [1, 1, 0])


def test_siblings_are_averaged_and_the_random_reference_is_seeded():
    a, b = _random(64, 16, 0), _random(64, 16, 5)
    one = _values(_run(_sae(a), [_sae(b)]))
    both = _run(_sae(a), [_sae(a), _sae(b)])
    for stat in STATISTICS:
        assert both.metrics[stat].value == pytest.approx((1.0 + one[stat]) / 2, abs=1e-6)
    assert [p["pw_mcc"] for p in both.details["per_sibling"]] == pytest.approx([1.0, one["pw_mcc"]], abs=1e-6)
    again = _values(_run(_sae(a), [_sae(b)], seed=0))
    other = _values(_run(_sae(a), [_sae(b)], seed=1))
    assert again["random_pw_mcc"] == one["random_pw_mcc"] != other["random_pw_mcc"]
    assert again["pw_mcc"] == other["pw_mcc"]  # the seed only draws the reference
    assert both.metrics["pw_mcc"].interval is not None  # 64 directions that agree to different degrees
    assert both.metrics["pw_mcc"].evidence.sources == ("features",)


def test_without_siblings_it_says_to_run_several_seeds():
    task = Stability()
    assert task.cross_seed and not task.needs_model and not task.topk_rows and not task.depends_on_model
    for siblings in (None, lambda: []):
        ctx = TaskContext(None, "hook", lambda: None, siblings=siblings)
        with pytest.raises(BenchError, match="--seeds"):
            task.evaluate(_sae(torch.eye(4)), ctx)
