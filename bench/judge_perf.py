"""Judge throughput: features explained and scored per minute, in-process (llama.cpp) and through the llama.cpp
server with the `openai` client, on the same features in the same run (the ratio is what to track).

The features are known-token controls from the smoke preset's held-out split, scored at the autointerp task's
default sizes with the response cache off, so every request is computed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.judge.base import Judge, JudgeConfig, ResponseCache


def judge_throughput(judge: str = "qwen2.5-coder-1.5b", n_features: int = 4, server: bool = True, threads: int = 2,
                     console: Console | None = None) -> list[dict[str, Any]]:
    from bench.config import make_config
    from bench.harvest import harvest
    from bench.judge.llamacpp import LlamaCppBackend
    from bench.judge.local_server import llama_server
    from bench.judge.openai_endpoint import OpenAIEndpoint
    from bench.models import load_model
    from bench.runner import Runner
    from tasks.autointerp import AutoInterp
    from tasks.autointerp.calibration import control_features
    from tasks.autointerp.pipeline import interpret

    console = console or Console()
    cfg = make_config("smoke")
    spec, docs = Runner(cfg, Path("."), console).plan_activations()
    model = load_model(cfg.model)
    store = harvest(spec, docs, lambda: model, cfg.harvest_batch)
    tokens, keep = store.eval.tokens(), store.eval.keep()
    strings = {int(t): model.tokenizer.decode([int(t)]) for t in np.unique(tokens)}
    sizes = AutoInterp().sizes
    features, _ = control_features(tokens, keep, strings, n_features, sizes.min_contexts, seed=0)
    rows: list[dict[str, Any]] = []

    def measure(path: str, backend) -> None:
        j = Judge(backend, ResponseCache(None))
        start = time.perf_counter()
        scored, _ = interpret(features, tokens, strings, j, sizes, seed=0)
        seconds = time.perf_counter() - start
        rows.append({"path": path, "judge": backend.name, "features": len(scored), "seconds": seconds,
                     "features_per_minute": 60 * len(scored) / seconds, "requests": j.usage.requests,
                     "failed": j.usage.failed, "prompt_tokens_per_s": j.usage.prompt_tokens / seconds,
                     "simulation": j.simulation_mode})

    with console.status(f"in-process {judge}: {len(features)} features …"):
        backend = LlamaCppBackend(JudgeConfig(judge=judge, threads=threads))
        gguf = backend.path
        measure("in-process (llama.cpp)", backend)
        backend.close()
    if server:
        with console.status(f"llama.cpp server {judge}: {len(features)} features …"), \
                llama_server(str(gguf), n_ctx=4096, threads=threads) as url:
            measure("server (openai client)", OpenAIEndpoint(JudgeConfig(base_url=url, model=str(gguf), concurrency=1)))
    table = Table(title=f"autointerp judge throughput ({threads} threads; window {sizes.window}, explain from "
                  f"{sizes.n_explain}, score {sizes.n_top}+{sizes.n_random}+{sizes.n_sampled})")
    for col in ("path", "judge", "simulation", "features", "requests", "failed", "features / min", "prompt tok/s"):
        table.add_column(col, justify="left" if col in ("path", "judge", "simulation") else "right")
    for r in rows:
        table.add_row(r["path"], r["judge"], r["simulation"], str(r["features"]), str(r["requests"]), str(r["failed"]),
                      f"{r['features_per_minute']:.2f}", f"{r['prompt_tokens_per_s']:.0f}")
    console.print(table)
    if len(rows) == 2:
        console.print(f"server / in-process: {rows[1]['features_per_minute'] / rows[0]['features_per_minute']:.2f}x "
                      "features per minute")
    return rows
