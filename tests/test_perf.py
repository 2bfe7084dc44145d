"""The throughput reference must not change the shared model it measures; `bench perf --train`'s driver."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch
from rich.console import Console

from bench.perf import bare_forward, best_seconds, bridge_forward
from bench.train_perf import compare, expected_pass_rate, main, train_throughput


def test_bare_forward_leaves_the_model_whole(model):
    tokens = torch.randint(100, 40_000, (2, 16), generator=torch.Generator().manual_seed(0))
    before = model.logits(tokens)
    n_layers = len(model.bridge.original_model.model.layers)
    assert best_seconds(bare_forward(model, tokens, layer=3, batch=2), repeats=1) > 0
    assert best_seconds(bridge_forward(model, tokens, "blocks.3.hook_resid_post", batch=2), repeats=1) > 0
    assert len(model.bridge.original_model.model.layers) == n_layers == model.n_layers
    assert torch.equal(model.logits(tokens), before)


# --- `bench perf --train` (bench/train_perf.py) ----------------------------------------------------------------
def _saelens_python() -> str | None:
    if os.environ.get("DECOMPBENCH_SAELENS_PYTHON"):
        return os.environ["DECOMPBENCH_SAELENS_PYTHON"]
    venv = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "decompbench-ci/venv-saelens/bin/python"
    return str(venv) if venv.exists() else None


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_expected_pass_rate_adds_step_times():
    assert expected_pass_rate([2.0, 2.0]) == pytest.approx(1.0)
    assert expected_pass_rate([1000.0, 3000.0, 1500.0]) == pytest.approx(500.0)  # 3 + 1 + 2 ms per token-step
    assert expected_pass_rate([700.0]) == pytest.approx(700.0)


def test_compare_takes_the_fastest_saelens_configuration():
    rows = [{"trainer": "decompbench", "arch": "sae-topk", "tokens_per_s": 9000.0, "peak_extra_mib": 100.0},
            {"trainer": "sae-lens", "ours": "sae-topk", "config": "default", "tokens_per_s": 3000.0,
             "peak_extra_mib": 400.0},
            {"trainer": "sae-lens", "ours": "sae-topk", "config": "no-rescale", "tokens_per_s": 4500.0,
             "peak_extra_mib": 200.0},
            {"trainer": "sae-lens", "ours": "sae-topk", "config": "sparse+no-rescale", "error": "boom"},
            {"trainer": "decompbench", "arch": "sae-relu", "tokens_per_s": 5000.0}]
    compare(rows)
    assert rows[0]["vs_saelens"] == pytest.approx(2.0) and rows[0]["memory_vs_saelens"] == pytest.approx(0.5)
    assert rows[0]["saelens_config"] == "no-rescale"
    assert [bool(r.get("fastest")) for r in rows] == [False, False, True, False, False]
    assert "vs_saelens" not in rows[4]  # nothing of SAELens' timed for it


def test_train_throughput_times_each_sae_and_the_shared_pass():
    rows = train_throughput(["sae-relu", "sae-topk[k=4]"], d=16, ratio=2.0, batch=64, k=4, steps=2, warmup=1,
                            threads=1, saelens_python=None, console=_quiet(), rounds=2)
    singles, whole = rows[:2], rows[2]
    assert [r["arch"] for r in singles] == ["sae-relu", "sae-topk[k=4]"]
    for r in rows:
        assert "error" not in r, r.get("error")
        assert len(r["block_seconds"]) == 2 and r["tokens_per_s"] == pytest.approx(2 * 64 / min(r["block_seconds"]))
        assert min(r["block_seconds"]) > 1e-4  # two real steps, not a burst of progress calls for steps done earlier
        assert r["peak_extra_mib"] is not None and r["mfu"] > 0
    assert whole["arch"] == "one pass: 2 SAEs" and whole["sae_steps"] == 2 and whole["config"] == "train_saes"
    assert whole["expected_tokens_per_s"] == pytest.approx(expected_pass_rate([r["tokens_per_s"] for r in singles]))
    assert whole["vs_expected"] == pytest.approx(whole["tokens_per_s"] / whole["expected_tokens_per_s"])


def test_one_shot_measurement_prints_one_json_line(capsys):
    threads = torch.get_num_threads()
    try:
        main(["--arch", "sae-topk", "--d", "16", "--m", "32", "--batch", "64", "--k", "4", "--steps", "3",
              "--warmup", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    row = json.loads(capsys.readouterr().out)
    assert row["arch"] == "sae-topk" and row["threads"] == 1 and row["peak_extra_mib"] is not None
    assert row["tokens_per_s"] == pytest.approx(64 * row["steps_per_s"]) and row["steps_per_s"] > 0


def test_a_failing_measurement_is_a_one_line_row():
    rows = train_throughput(["sae-nope"], d=16, ratio=2.0, batch=64, k=4, steps=1, warmup=1, threads=1,
                            saelens_python=None, console=_quiet(), rounds=1)
    assert len(rows) == 1 and rows[0]["error"].startswith("error: ") and "sae-nope" in rows[0]["error"]


@pytest.mark.skipif(_saelens_python() is None, reason="no sae-lens venv (set DECOMPBENCH_SAELENS_PYTHON)")
def test_saelens_configurations_are_timed_beside_ours():
    rows = train_throughput(["sae-topk"], d=16, ratio=4.0, batch=64, k=4, steps=1, warmup=1, threads=1,
                            saelens_python=_saelens_python(), console=_quiet(), rounds=2)
    ours, *theirs = rows
    assert [r["config"] for r in theirs] == ["default", "no-rescale", "sparse+no-rescale"]
    for r in theirs:
        assert "error" not in r, r.get("error")
        assert r["trainer"] == "sae-lens" and r["arch"] == "topk" and r["batch"] == 64 and r["threads"] == 1
        assert len(r["block_seconds"]) == 2
    best = max(theirs, key=lambda r: r["tokens_per_s"])
    assert [r.get("fastest", False) for r in theirs] == [r is best for r in theirs]
    assert ours["vs_saelens"] == pytest.approx(ours["tokens_per_s"] / best["tokens_per_s"])
