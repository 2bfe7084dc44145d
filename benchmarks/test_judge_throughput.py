"""autointerp judge throughput: features per minute in-process and through the llama.cpp server, same features.

Run: `pytest benchmarks/test_judge_throughput.py --benchmark-enable -s` (or `python -m bench perf --autointerp`).
"""

from __future__ import annotations

from bench.judge_perf import judge_throughput


def test_judge_features_per_minute(benchmark):
    rows = benchmark.pedantic(lambda: judge_throughput("qwen2.5-coder-1.5b", n_features=2), rounds=1, iterations=1)
    in_process, server = rows
    benchmark.extra_info.update({f"{r['path']}: features/min": r["features_per_minute"] for r in rows})
    benchmark.extra_info["server / in-process"] = server["features_per_minute"] / in_process["features_per_minute"]
    assert in_process["features"] == server["features"] > 0
