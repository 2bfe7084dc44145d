"""Judge throughput: scored samples per second, in-process (llama.cpp) and through the llama.cpp server with the
`openai` client, on the same features (known-token controls of the default preset's eval split; the first call
harvests it) at the autointerp task's default sizes, with the response cache off.

A scored sample is one detection, fuzzing or simulation request; the explanations' time counts (it is part of
scoring a feature) but they are not samples. With `against=REV` the same measurement also runs on the code of
commit REV (checked out in a temporary git worktree) in the same run on the same features, alternating old and
new (`rounds` times: the median of the per-round ratios is the figure to quote, one round moved by ~±5% on 2
shared cores), so the speed-up is a ratio taken on one machine in one hour. Every measurement runs in its own interpreter
(the tree's own modules); loading the model and harvesting are not timed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.errors import BenchError

# Runs in the tree under test: only APIs both old and new trees have (controls, the pipeline, the judge backends).
_MEASURE = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from rich.console import Console
from bench.config import make_config
from bench.harvest import harvest
from bench.judge.base import Judge, JudgeConfig, ResponseCache
from bench.models import load_model
from bench.runner import Runner
from tasks.autointerp import AutoInterp
from tasks.autointerp.calibration import control_features
from tasks.autointerp.pipeline import interpret

judge_name, n_features, threads, path, min_contexts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
cfg = make_config("default")  # its eval split has contexts enough for the default sizes
spec, docs = Runner(cfg, Path("."), Console(stderr=True)).plan_activations()
model = load_model(cfg.model)
store = harvest(spec, docs, lambda: model, cfg.harvest_batch)
tokens, keep = store.eval.tokens(), store.eval.keep()
strings = {int(t): model.tokenizer.decode([int(t)]) for t in np.unique(tokens)}
sizes = AutoInterp().sizes
features, _ = control_features(tokens, keep, strings, n_features, min_contexts, seed=0)

def measure(backend):
    j = Judge(backend, ResponseCache(None))
    start = time.perf_counter()
    scored, _ = interpret(features, tokens, strings, j, sizes, seed=0)
    seconds = time.perf_counter() - start
    explained = len(scored)
    return {"features": explained, "requests": j.usage.requests, "samples": j.usage.requests - explained,
            "failed": j.usage.failed, "seconds": seconds, "prompt_tokens": j.usage.prompt_tokens,
            "simulation": j.simulation_mode, "judge": backend.name, "sizes": repr(sizes)}

from bench.judge.llamacpp import LlamaCppBackend
backend = LlamaCppBackend(JudgeConfig(judge=judge_name, threads=threads))
if path == "in-process":
    row = measure(backend)
else:
    from bench.judge.local_server import llama_server
    from bench.judge.openai_endpoint import OpenAIEndpoint
    gguf = str(backend.path)
    backend.close()
    with llama_server(gguf, n_ctx=4096, threads=threads) as url:
        row = measure(OpenAIEndpoint(JudgeConfig(base_url=url, model=gguf, concurrency=1)))
print("MEASURED " + json.dumps(row))
"""

ROOT = Path(__file__).resolve().parents[1]


def _measure(tree: Path, judge: str, n_features: int, threads: int, path: str, min_contexts: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", _MEASURE, judge, str(n_features), str(threads), path,
                           str(min_contexts)], cwd=tree, env=env, capture_output=True, text=True)
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("MEASURED ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"judge throughput on {tree} ({path}) failed: {tail[0]}")
    row = json.loads(line[len("MEASURED "):])
    if row["features"] == 0:
        raise BenchError(f"judge throughput on {tree}: no feature to score (no token of the eval split is frequent "
                         "enough for a control)")
    row["samples_per_s"] = row["samples"] / row["seconds"]
    row["prompt_tokens_per_s"] = row["prompt_tokens"] / row["seconds"]
    return row


def _worktree(rev: str, where: Path) -> Path:
    tree = where / "tree"
    proc = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["git worktree failed"])[-1]
        raise BenchError(f"--against {rev}: cannot check it out ({why}); give a commit of this git checkout")
    return tree


def judge_throughput(judge: str = "qwen2.5-coder-1.5b", n_features: int = 4, server: bool = True, threads: int = 2,
                     console: Console | None = None, against: str | None = None,
                     rounds: int = 1) -> list[dict[str, Any]]:
    from tasks.autointerp import AutoInterp

    if rounds < 1:
        raise BenchError(f"--rounds {rounds}: give at least 1")
    console = console or Console()
    # Features need enough contexts for today's sizes; the same features serve an older commit's (smaller) sizes.
    min_contexts = AutoInterp().sizes.min_contexts
    paths = ["in-process"] + (["server"] if server else [])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = [("working tree", ROOT)]
        if against:
            trees.insert(0, (against, _worktree(against, Path(tmp))))
        try:
            for path in paths:
                for r in range(rounds):
                    for code, tree in trees:
                        with console.status(f"{path} {judge}, code {code}, round {r + 1} of {rounds}: "
                                            f"{n_features} features …"):
                            rows.append({"code": code, "path": path, "round": r + 1,
                                         **_measure(tree, judge, n_features, threads, path, min_contexts)})
        finally:
            if against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(Path(tmp) / "tree")],
                               capture_output=True)
    table = Table(title=f"autointerp judge throughput ({threads} threads, response cache off)")
    for col in ("code", "path", "round", "judge", "features", "samples", "failed", "seconds", "samples / s",
                "prompt tok/s"):
        table.add_column(col, justify="left" if col in ("code", "path", "judge") else "right")
    for r in rows:
        table.add_row(r["code"], r["path"], str(r["round"]), r["judge"], str(r["features"]), str(r["samples"]),
                      str(r["failed"]), f"{r['seconds']:.1f}", f"{r['samples_per_s']:.2f}",
                      f"{r['prompt_tokens_per_s']:.0f}")
    console.print(table)
    if against:
        for path in paths:
            ratios = speedups(rows, path)
            if ratios:
                each = ", ".join(f"{x:.2f}" for x in ratios)
                console.print(f"{path}: working tree / {against}: {statistics.median(ratios):.2f}x scored samples per "
                              f"second" + (f" (median of {len(ratios)} rounds: {each})" if len(ratios) > 1 else ""))
    return rows


def speedups(rows: list[dict[str, Any]], path: str) -> list[float]:
    """Per round, the working tree's samples per second over the older commit's on `path`."""
    out = []
    for r in sorted({row["round"] for row in rows if row["path"] == path}):
        old, new = (next((row for row in rows if row["path"] == path and row["round"] == r
                          and (row["code"] == "working tree") == mine), None) for mine in (False, True))
        if old and new and old["samples_per_s"] > 0:
            out.append(new["samples_per_s"] / old["samples_per_s"])
    return out
