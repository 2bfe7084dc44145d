"""Leaderboard tables from result records: grouping, best marks, and method specs shown verbatim."""

from __future__ import annotations

from rich.console import Console

import numpy as np
import pytest

from bench.stats import Evidence, interval
from reports.leaderboard import build_leaderboards, cell, to_markdown, to_rich


def _record(method, fvu, sparse=False, k=None, evidence=None, seed=0, task="reconstruction", metric="fvu"):
    m = {"value": fvu, "higher_is_better": False}
    if evidence is not None:
        m["evidence"] = evidence.to_json()
        info = interval(evidence)
        m["interval"], m["interval_info"] = info.interval, info.to_json()
    return {"model": "m", "hook": "h", "method": method, "task": task, "sparse": sparse, "matched_k": k, "seed": seed,
            "metrics": {metric: m}, "exclusion": {"rule": "excluded: position 0", "excluded_fraction_eval": 0.01}}


def _evidence(err):
    return Evidence("document", [f"d{i}" for i in range(len(err))], "ratio", {"num": err, "den": np.full(len(err), 10.0)})


def test_groups_marks_and_escaped_specs():
    rng = np.random.default_rng(0)
    err = rng.gamma(4.0, 0.5, size=40)
    worse = err + rng.gamma(4.0, 0.1, size=40)
    a, b = _evidence(err), _evidence(worse)
    records = [_record("pca", 0.0, evidence=_evidence(np.zeros(40))),
               _record("pca@top8", b.value(), k=8, evidence=b),
               _record("sae-relu[l1_coeff=0.001]", a.value(), True, 8, evidence=a),
               _record("sae-topk", a.value(), True, 8, evidence=_evidence(err.copy()))]
    (board,) = build_leaderboards(records, ["pca", "sae-relu", "sae-topk"])
    assert [(r.method, r.group) for r in board.rows] == [
        ("pca", "all"), ("sae-relu[l1_coeff=0.001]", "all"), ("sae-topk", "all"), ("pca@top8", "top-k"),
        ("sae-relu[l1_coeff=0.001]", "top-k"), ("sae-topk", "top-k")]
    rows = {(r.method, r.group): r for r in board.rows}
    col = board.columns[0]
    # identical evidence ties (group 1 both); the noisier pca@top8 is group 2; full-width pca is not ranked (exact)
    assert [board.rank(rows[k], col) for k in [("sae-relu[l1_coeff=0.001]", "top-k"), ("sae-topk", "top-k"),
                                               ("pca@top8", "top-k"), ("pca", "all")]] == [1, 1, 2, None]
    assert rows[("pca", "all")].excluded(col)
    md = to_markdown([board])
    relu = rows[("sae-relu[l1_coeff=0.001]", "top-k")]
    assert f"| `sae-relu[l1_coeff=0.001]` | top-k | **{cell(relu, col, board)}** |" in md
    assert "①" in cell(relu, col, board) and "②" in cell(rows[("pca@top8", "top-k")], col, board)
    assert md.index("### Summary") < md.index("### Every metric")
    # the summary takes pca's matched-sparsity row for FVU, never the exact full-width one
    assert board.summary.cells[("pca", col)].method == "pca@top8"
    console = Console(record=True, width=250)
    for table in to_rich([board]):
        console.print(table)
    text = console.export_text()
    assert "sae-relu[l1_coeff=0.001]" in text and "summary" in text


def test_a_task_narrowed_to_some_methods_says_which_it_left_out():
    narrowed = {"task_methods": {"autointerp": ["sae-topk", "neurons"]}}
    records = [_record(m, 0.3, True) for m in ("pca", "neurons", "sae-topk", "sae-topk[k=8]")]
    records += [{**_record(m, 0.6, task="autointerp", metric="detection_auroc"), "task_name": "autointerp",
                 "config": narrowed} for m in ("neurons", "sae-topk")]
    (board,) = build_leaderboards(records, ["pca", "neurons", "sae-topk"])
    # sae-topk[k=8] is one the narrowing keeps: without a result, its unit failed; it is not said to be skipped
    assert ("autointerp evaluates sae-topk, neurons only (the run's --task-methods or preset), not pca: "
            "--task-methods autointerp=all evaluates every method") in board.notes
    # every method scored, or no narrowing recorded: nothing to say
    records[-1]["config"] = records[-2]["config"] = {}
    assert not any("evaluates" in n for n in build_leaderboards(records)[0].notes)


def test_a_run_in_bf16_says_so_once():
    records = [{**_record(m, 0.3), "config": {"eval_dtype": "bfloat16"}} for m in ("pca", "neurons")]
    notes = build_leaderboards(records)[0].notes
    assert sum("evaluation passes in bfloat16 (--eval-dtype)" in n for n in notes) == 1
    for r in records:
        r["config"] = {"eval_dtype": "float32"}
    assert not any("--eval-dtype" in n for n in build_leaderboards(records)[0].notes)


def test_no_group_without_evidence():
    (board,) = build_leaderboards([_record("pca@top8", 0.4, k=8), _record("sae-relu", 0.3, True, 8)], ["pca"])
    assert all(board.rank(r, board.columns[0]) is None for r in board.rows)


def test_seeds_fill_one_row_with_mean_spread_and_seed_tests():
    records = []
    for seed, (good, bad) in enumerate([(0.20, 0.30), (0.21, 0.31), (0.22, 0.325)]):
        suffix = "" if seed == 0 else f"~s{seed}"
        records += [_record(f"sae-topk{suffix}", good, True, 8, seed=seed),
                    _record(f"sae-relu{suffix}", bad, True, 8, seed=seed),
                    _record(f"sae-gated{suffix}", good, True, 8, seed=seed)]
    (board,) = build_leaderboards(records, ["sae-relu", "sae-topk", "sae-gated"])
    assert board.seeds == [0, 1, 2]
    rows = {r.method: r for r in board.rows if r.group == "all"}
    col = board.columns[0]
    c = rows["sae-topk"].cells[col]
    assert c.value == pytest.approx(0.21) and c.spread == pytest.approx(0.01) and c.info["unit"] == "seed"
    assert c.interval == pytest.approx((0.21 - 4.3027 * 0.01 / 3**0.5, 0.21 + 4.3027 * 0.01 / 3**0.5), abs=1e-4)
    assert {m: board.rank(r, col) for m, r in rows.items()} == {"sae-relu": 2, "sae-topk": 1, "sae-gated": 1}
    row_json = next(r for r in board.to_json()["rows"] if r["method"] == "sae-topk")
    assert row_json["seeds"]["reconstruction.fvu"] == {"0": 0.2, "1": 0.21, "2": 0.22}


def test_sweep_curves_keep_only_the_varying_parameter():
    from reports.sweeps import sweep_curves

    def rec(l1, mmcs, task="toy_superposition"):
        return {"method": f"sae-relu[l1_coeff={l1}]", "method_name": "sae-relu", "sparse": True, "matched_k": None,
                "method_params": {"l1_coeff": l1, "dict_ratio": 4.0, "seed": 0}, "task": task,
                "metrics": {"mmcs": {"value": mmcs}}}

    records = [rec(1e-2, 0.98), rec(1e-3, 0.95), rec(3e-3, 0.99),
               {**rec(1e-3, 0.5), "method_name": "pca", "method": "pca", "method_params": {"seed": 0}}]
    curves = sweep_curves(records)
    assert list(curves) == ["sae-relu"]  # pca ran at one setting: no curve
    points = curves["sae-relu"]["toy_superposition"]
    assert [p["params"] for p in points] == [{"l1_coeff": 1e-3}, {"l1_coeff": 3e-3}, {"l1_coeff": 1e-2}]
    assert [p["metrics"]["mmcs"] for p in points] == [0.95, 0.99, 0.98]
