"""Leaderboard tables from result records: grouping, best marks, and method specs shown verbatim."""

from __future__ import annotations

from rich.console import Console

from reports.leaderboard import build_leaderboards, to_markdown, to_rich


def _record(method, fvu, sparse=False, k=None):
    return {"model": "m", "hook": "h", "method": method, "task": "reconstruction", "sparse": sparse, "matched_k": k,
            "metrics": {"fvu": {"value": fvu, "higher_is_better": False}},
            "exclusion": {"rule": "excluded: position 0", "excluded_fraction_eval": 0.01}}


def test_groups_best_marks_and_escaped_specs():
    records = [_record("pca", 0.0), _record("pca@top8", 0.4, k=8), _record("sae-relu[l1_coeff=0.001]", 0.3, True, 8)]
    (board,) = build_leaderboards(records, ["pca", "sae-relu"])
    assert [(r.method, r.group) for r in board.rows] == [
        ("pca", "all"), ("sae-relu[l1_coeff=0.001]", "all"), ("pca@top8", "top-k"), ("sae-relu[l1_coeff=0.001]", "top-k")]
    md = to_markdown([board])
    assert "| `sae-relu[l1_coeff=0.001]` | top-k | **0.3000** |" in md
    console = Console(record=True, width=200)
    for table in to_rich([board]):
        console.print(table)
    assert "sae-relu[l1_coeff=0.001]" in console.export_text()


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
