"""`bench perf --autointerp`'s arithmetic: per-round ratios of the working tree over the older commit."""

from __future__ import annotations

import pytest

from bench.judge_perf import speedups
from tests.test_bad_input import assert_one_line, run_main


def _row(code: str, path: str, rnd: int, sps: float) -> dict:
    return {"code": code, "path": path, "round": rnd, "samples_per_s": sps}


def test_speedups_pair_each_round_old_with_new_on_one_path():
    rows = [_row("abc123", "in-process", 1, 0.8), _row("working tree", "in-process", 1, 2.4),
            _row("abc123", "in-process", 2, 1.0), _row("working tree", "in-process", 2, 2.9),
            _row("abc123", "server", 1, 0.2), _row("working tree", "server", 1, 0.7),
            _row("abc123", "in-process", 3, 0.9)]  # a round whose new half is missing: no ratio
    assert speedups(rows, "in-process") == pytest.approx([3.0, 2.9])
    assert speedups(rows, "server") == pytest.approx([3.5])
    assert speedups(rows, "nowhere") == []


def test_rounds_below_one_is_a_one_line_error(capsys):
    assert_one_line(*run_main(capsys, "perf", "--autointerp", "--against", "HEAD", "--rounds", "0"), "--rounds 0")
