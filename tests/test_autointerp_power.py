"""The autointerp verdict (reports/autointerp_power.py) on records whose answer is known by construction.

Records are the smoke baseline's real neurons autointerp record with its metrics replaced: per-feature scores drawn
in the test, as `tasks.autointerp` stores them (a "mean" Evidence over features, column x, with its interval)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from rich.console import Console

from bench.stats import Evidence, compare_p, interval
from reports.autointerp_power import TITLE, TOO_FEW, Z_SUM, mde
from reports.html import autointerp_power_table
from reports.leaderboard import build_leaderboards, to_markdown, to_rich
from reports.report import schema
from tests.report_helpers import BASELINE

REAL = BASELINE / "results" / "smollm2-135m__blocks.12.hook_resid_post__neurons__autointerp.json"


@pytest.fixture(scope="module")
def real() -> dict:
    return json.loads(REAL.read_text())


def _metric(x: np.ndarray) -> dict:
    # Feature indices as ids, 0..n-1 for every method: methods with dictionaries of one size draw the same indices.
    ev = Evidence("feature", [str(i) for i in range(len(x))], "mean", {"x": x}, sources=("features sampled", "judge"))
    info = interval(ev)
    return {"value": ev.value(), "higher_is_better": True, "interval": list(info.interval) if info.interval else None,
            "interval_info": info.to_json(), "evidence": ev.to_json()}


def _record(real: dict, method: str, scores: dict[str, np.ndarray], variance: dict | None = None, seed: int = 0):
    rec = copy.deepcopy(real)
    rec["method"], rec["seed"] = method if seed == 0 else f"{method}~s{seed}", seed
    rec["metrics"] = {name: _metric(np.asarray(x, float)) for name, x in scores.items()}
    rec["details"].pop("variance", None)
    if variance is not None:
        rec["details"]["variance"] = variance
    return rec


def _standard(n: int, rng: np.random.Generator) -> np.ndarray:
    """n values with mean 0 and sample SD (ddof 1) exactly 1."""
    z = rng.normal(size=n)
    return (z - z.mean()) / z.std(ddof=1)


@pytest.fixture(scope="module")
def board(real):
    """sae-topk's scores N(0.8, 0.1), neurons' N(0.5, 0.1), random's = neurons' shuffled (40 features each);
    sae-tiny has 3 features; fuzzing only for sae-topk and neurons; variance components on every record."""
    rng = np.random.default_rng(0)
    neurons = 0.5 + 0.1 * rng.normal(size=40)
    good = 0.8 + 0.1 * rng.normal(size=40)
    variance = {"detection_auroc": {"between": 0.01, "within": 0.0025, "samples_per_feature": 8}}
    records = [
        _record(real, "neurons", {"detection_auroc": neurons, "fuzzing_auroc": neurons, "simulation": neurons},
                variance),
        _record(real, "random", {"detection_auroc": rng.permutation(neurons), "simulation": neurons}, variance),
        _record(real, "sae-topk", {"detection_auroc": good, "fuzzing_auroc": good, "simulation": good}, variance),
        _record(real, "sae-tiny", {"detection_auroc": [0.9, 0.95, 0.85], "simulation": [0.9, 0.95, 0.85]}),
    ]
    (b,) = build_leaderboards(records, ["neurons", "random", "sae-topk", "sae-tiny"])
    return b


def _scorer(board, metric):
    return next(s for s in board.autointerp.scorers if s.metric == metric)


def test_a_clear_gap_is_significant_and_identical_distributions_are_not(board):
    det = _scorer(board, "detection_auroc")
    assert det.baselines == ["neurons", "random"]
    rows = {v.method: v for v in det.rows}
    vs_neurons = rows["sae-topk"].comparisons["neurons"]
    assert vs_neurons.difference == pytest.approx(0.3, abs=0.05)
    assert vs_neurons.p < 0.001 and vs_neurons.significant
    assert rows["sae-topk"].comparisons["random"].significant
    # random holds neurons' very scores, shuffled: the same distribution, no difference, p = 1
    same = rows["random"].comparisons["neurons"]
    assert same.difference == pytest.approx(0.0, abs=1e-6) and same.p > 0.5 and not same.significant
    assert "random" not in rows["random"].comparisons and "neurons" not in rows["neurons"].comparisons
    # a scorer only two methods have: random has no fuzzing row, so fuzzing has no random baseline
    fuzz = _scorer(board, "fuzzing_auroc")
    assert fuzz.baselines == ["neurons"] and [v.method for v in fuzz.rows] == ["neurons", "sae-topk"]
    assert [s.metric for s in board.autointerp.scorers] == ["detection_auroc", "fuzzing_auroc", "simulation"]


def test_equal_feature_ids_are_not_paired(real):
    """Feature 7 of one dictionary is not feature 7 of another: a method scoring every feature 0.01 above the
    baseline's feature of the same index is no evidence of a difference (a paired test would call it certain)."""
    base = 0.5 + 0.1 * np.random.default_rng(1).normal(size=40)
    (b,) = build_leaderboards([_record(real, "neurons", {"detection_auroc": base}),
                               _record(real, "pca", {"detection_auroc": base + 0.01})])
    (pca,) = [v for v in b.autointerp.scorers[0].rows if v.method == "pca"]
    assert pca.comparisons["neurons"].p > 0.5 and not pca.comparisons["neurons"].significant
    paired = compare_p(Evidence.from_json(_metric(base + 0.01)["evidence"]),
                       Evidence.from_json(_metric(base)["evidence"]))
    assert paired < 0.001  # what pairing by id would have said


def test_minimum_detectable_difference_matches_the_formula(real):
    assert Z_SUM == pytest.approx(1.959964 + 0.841621, abs=1e-6)
    rng = np.random.default_rng(2)
    a, b = 0.7 + 0.2 * _standard(50, rng), 0.5 + 0.2 * _standard(50, rng)  # s = 0.2, n = 50 both sides
    assert mde(a, b) == pytest.approx(2.8016 * 0.2 * math.sqrt(2 / 50), abs=1e-4)
    assert mde(a, b) == pytest.approx(0.1121, abs=1e-4)
    assert mde(a[:4], b) is None  # fewer than 5 features
    (board,) = build_leaderboards([_record(real, "neurons", {"simulation": b}), _record(real, "sae-relu", {"simulation": a})])
    (sim,) = board.autointerp.scorers
    assert sim.mde == pytest.approx(0.1121, abs=1e-4) and sim.mde_n == 50
    assert sim.rows[1].comparisons["neurons"].mde == pytest.approx(0.1121, abs=1e-4)
    assert ("minimum detectable difference (80% power, α 0.05, n = 50 features per method): 0.1121; "
            "between- and within-feature SD: not in these records") == sim.power_line()


def test_too_few_features_says_so_and_stays_out_of_the_holm_family(board):
    det = _scorer(board, "detection_auroc")
    tiny = next(v for v in det.rows if v.method == "sae-tiny")
    assert tiny.n == 3
    values = {v.method: v.value for v in det.rows}
    for name, c in tiny.comparisons.items():
        assert c.p is None and c.reason == TOO_FEW and not c.significant and c.mde is None
        assert c.difference == pytest.approx(0.9 - values[name])  # the difference is still shown
    md = to_markdown([board])
    assert f"| `sae-tiny` | 3 | 0.9000 | +{tiny.comparisons['neurons'].difference:.4f} ({TOO_FEW}) |" in md


def test_holm_corrects_within_each_scorer_and_baseline(real, monkeypatch):
    """p 0.01, 0.03, 0.04 against neurons: each below 0.05, but after Holm over three only 0.01 survives."""
    import reports.autointerp_power as power

    rng = np.random.default_rng(3)
    records = [_record(real, "neurons", {"detection_auroc": 0.5 + 0.1 * rng.normal(size=20)})]
    ps = {}
    for name, p, shift in (("m1", 0.01, 0.6), ("m2", 0.03, 0.7), ("m3", 0.04, 0.8)):
        x = shift + 0.1 * _standard(20, rng)
        records.append(_record(real, name, {"detection_auroc": x}))
        ps[round(float(x.mean()), 6)] = p
    monkeypatch.setattr(power, "unpaired_p", lambda a, b: ps.get(round(a.value(), 6), 1.0))
    (b,) = build_leaderboards(records)
    rows = {v.method: v.comparisons.get("neurons") for v in b.autointerp.scorers[0].rows}
    assert {m: c.p for m, c in rows.items() if c} == {"m1": 0.01, "m2": 0.03, "m3": 0.04}
    assert {m: c.significant for m, c in rows.items() if c} == {"m1": True, "m2": False, "m3": False}


def test_variance_components_are_stated(board):
    det = _scorer(board, "detection_auroc")
    assert det.between_sd == pytest.approx(0.1) and det.within_sd == pytest.approx(0.05)
    assert det.samples_per_feature == 8 and det.within_share == pytest.approx(0.2)
    assert "between-feature SD 0.1000, within-feature SD 0.0500 (at m = 8 samples per feature" in det.power_line()
    assert "20% of a feature score's variance" in det.power_line()
    assert _scorer(board, "simulation").between_sd is None  # no variance for that metric in the records


def test_rendered_in_markdown_terminal_json_and_html(board):
    jsonschema = pytest.importorskip("jsonschema")
    md = to_markdown([board])
    section = md[md.index(f"### {TITLE}"):]
    assert "**autointerp.detection_auroc** ↑" in section and "**autointerp.fuzzing_auroc** ↑" in section
    assert "| method | features | value [95% interval] | Δ vs neurons | Δ vs random |" in section
    assert "(p < 0.001 ✓)" in section and "| `neurons` | 40 |" in section
    assert section.count("minimum detectable difference (80% power, α 0.05, n = 40 features per method): ") == 3

    console = Console(record=True, width=250)
    for table in to_rich([board]):
        console.print(table)
    text = console.export_text()
    assert TITLE in text and "autointerp fuzz" in text and "p < 0.001 ✓" in text and TOO_FEW in text

    data = json.loads(json.dumps(board.to_json(), allow_nan=False))
    jsonschema.validate(data, {"$defs": schema()["$defs"], "$ref": "#/$defs/board"})
    det = data["autointerp"]["scorers"][0]
    topk = next(r for r in det["rows"] if r["method"] == "sae-topk")
    assert topk["n"] == 40 and topk["comparisons"]["neurons"]["significant"] is True
    assert next(r for r in det["rows"] if r["method"] == "sae-tiny")["comparisons"]["neurons"]["reason"] == TOO_FEW

    html = autointerp_power_table(board)
    assert TITLE in html and "<code>autointerp.detection_auroc</code>" in html and "p &lt; 0.001 ✓" in html


def test_method_names_are_escaped_in_html(real):
    rng = np.random.default_rng(4)
    (b,) = build_leaderboards([_record(real, "neurons", {"simulation": rng.normal(size=10)}),
                               _record(real, "x[<script>alert(1)</script>]", {"simulation": rng.normal(size=10)})])
    html = autointerp_power_table(b)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_several_seeds_test_the_first_and_say_so(real):
    rng = np.random.default_rng(5)
    records = [_record(real, m, {"simulation": 0.5 + 0.1 * rng.normal(size=10)}, seed=s)
               for s in (0, 1) for m in ("neurons", "sae-topk")]
    (b,) = build_leaderboards(records)
    assert b.autointerp.seed == 0
    assert any("seed 0 alone is tested" in n for n in b.autointerp.notes)
    (sim,) = b.autointerp.scorers
    cell = next(r for r in b.rows if r.method == "sae-topk").cells[next(iter(b.columns))]
    assert sim.rows[1].value == pytest.approx(cell.seeds[0]) and sim.rows[1].value != pytest.approx(cell.value)


def test_a_board_without_autointerp_has_no_section():
    rec = {"model": "m", "hook": "h", "method": "pca", "task": "reconstruction", "sparse": False, "matched_k": None,
           "seed": 0, "metrics": {"fvu": {"value": 0.2, "higher_is_better": False}}}
    (b,) = build_leaderboards([rec])
    assert b.autointerp is None and "autointerp" not in b.to_json()
    assert TITLE not in to_markdown([b]) and autointerp_power_table(b) == ""
    console = Console(record=True, width=200)
    for table in to_rich([b]):
        console.print(table)
    assert TITLE not in console.export_text()


def test_the_board_counts_explanations_that_copy_a_worked_example(real):
    recs = []
    for method, copied in (("neurons", 0), ("sae-topk", 2)):
        rec = _record(real, method, {"detection_auroc": np.linspace(0.4, 0.9, 6)})
        rec["details"]["copies"] = {"explanations": 6, "copied": copied}
        recs.append(rec)
    (b,) = build_leaderboards(recs)
    assert "autointerp explanations repeating a worked example of the prompt: 2 of 12" in b.notes
