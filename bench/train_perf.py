"""`python -m bench perf --train`: SAE training throughput, model-FLOPs utilisation and peak memory per step.

    MFU = steps/s × 12·B·d·m FLOPs ÷ matmul FLOP/s

12·B·d·m counts a dense SAE step (encoder and decoder matmuls, forward 4·B·d·m, backward 8·B·d·m); the matmul
FLOP/s is this machine's fp32 rate on the step's own three matmul shapes, measured in the same run, so the
figure holds on a shared, noisy machine. A sparse step (TopK family) does less than 12·B·d·m work, so its "MFU"
can pass 100%: it says how much faster than a perfect dense step it is.

Peak extra memory per step: resident memory before one step (after warm-up steps) against the high-water mark
during it (Linux `/proc/self/status` VmHWM, reset through `/proc/self/clear_refs`). Each measurement runs in a
fresh process, ours and SAELens' alike (`benchmarks/saelens_side.py`, run with the interpreter of a separate
virtual environment that has `sae-lens`: decompbench never depends on it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.perf import best_seconds

SAELENS_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "saelens_side.py"
SAELENS_ARCH = {"sae-relu": "standard", "sae-topk": "topk", "sae-batchtopk": "topk"}  # their closest step
MFU_FORMULA = "MFU = steps/s × 12·B·d·m FLOPs ÷ matmul FLOP/s (fp32, the step's matmul shapes, same run)"


def matmul_flops(batch: int, d: int, m: int, repeats: int = 3) -> float:
    """fp32 FLOP/s over the three matmul shapes of an SAE step: x@W_enc.T, c@W_dec, g.T@x."""
    g = torch.Generator().manual_seed(0)
    x, w, c = (torch.randn(s, generator=g) for s in ((batch, d), (m, d), (batch, m)))
    products: list[Callable[[], Any]] = [lambda: x @ w.T, lambda: c @ w, lambda: c.T @ x]
    return 3 * 2 * batch * d * m / sum(best_seconds(fn, repeats) for fn in products)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_extra_mib(fn: Callable[[], None]) -> float | None:
    """High-water resident memory during `fn()` above the resident memory before it, in MiB (None off Linux)."""
    try:
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        fn()
        return (_status_kib("VmHWM") - before) / 1024
    except (OSError, KeyError):
        return None


def measure_ours(spec: str, d: int, m: int, batch: int, k: int, steps: int, warmup: int, seed: int,
                 acts: str | None = None) -> dict[str, Any]:
    """Time our trainer's full step (forward, loss, backward, decoder-norm handling, Adam, bookkeeping)."""
    import methods
    from methods.trainer import SAETraining

    params: dict[str, Any] = {"dict_ratio": m / d, "batch_size": batch, "seed": seed}
    if "k" in methods.method_fields(methods.REGISTRY[methods.parse_spec(spec)[0]]):
        params["k"] = k
    method = methods.build_method(spec, params, seed=seed)
    g = torch.Generator().manual_seed(seed)
    data = (torch.from_numpy(np.load(acts)).float() if acts
            else torch.randn(4 * batch, d, generator=g))
    training = SAETraining(method, method.make(d, data[: 4 * batch]), total=10**9)
    batches = [data[torch.randint(0, len(data), (batch,), generator=g)] for _ in range(4)]
    step = 0

    def run(n: int) -> None:
        nonlocal step
        for _ in range(n):
            training.step(batches[step % len(batches)], step + 1000)  # past warm-up: the steady-state step
            step += 1

    run(warmup)
    peak = peak_extra_mib(lambda: run(1))
    start = time.perf_counter()
    run(steps)
    rate = steps / (time.perf_counter() - start)
    return {"trainer": "decompbench", "arch": spec, "steps_per_s": rate, "tokens_per_s": rate * batch,
            "peak_extra_mib": peak, "l0": training.last.get("l0")}


def _subprocess_json(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:200]}
    return json.loads(lines[-1])


def train_throughput(archs: list[str], d: int, ratio: float, batch: int, k: int, steps: int, warmup: int,
                     threads: int, saelens_python: str | None, console) -> list[dict[str, Any]]:
    from rich.table import Table

    m = round(ratio * d)
    torch.set_num_threads(threads)
    common = ["--d", str(d), "--m", str(m), "--batch", str(batch), "--k", str(k), "--steps", str(steps),
              "--warmup", str(warmup), "--threads", str(threads)]
    rows = []
    flops = matmul_flops(batch, d, m)
    for arch in archs:
        rows.append(_subprocess_json([sys.executable, "-m", "bench.train_perf", "--arch", arch, *common]))
    if saelens_python:
        theirs = {}
        for arch in dict.fromkeys(SAELENS_ARCH[a] for a in archs if a in SAELENS_ARCH):
            theirs[arch] = _subprocess_json([
                saelens_python, str(SAELENS_SCRIPT), "--arch", arch, "--d-in", str(d), "--d-sae", str(m),
                "--batch", str(batch), "--k", str(k), "--steps", str(steps), "--warmup", str(warmup),
                "--threads", str(threads)])
            theirs[arch].setdefault("arch", f"sae-lens {arch}")
            rows.append(theirs[arch])
    flops = (flops + matmul_flops(batch, d, m)) / 2  # before and after: the machine's rate during the run
    dense_flops = 12 * batch * d * m
    for row in rows:
        if "steps_per_s" in row:
            row["mfu"] = row["steps_per_s"] * dense_flops / flops
    if saelens_python:
        for row in rows:
            ref = next((r for r in rows if r.get("trainer") == "sae-lens"
                        and r.get("arch") == SAELENS_ARCH.get(row.get("arch", ""))), None)
            if row.get("trainer") == "decompbench" and ref and "steps_per_s" in ref:
                row["vs_saelens"] = row["steps_per_s"] / ref["steps_per_s"]
                if row.get("peak_extra_mib") and ref.get("peak_extra_mib"):
                    row["memory_vs_saelens"] = row["peak_extra_mib"] / ref["peak_extra_mib"]
    table = Table(title="SAE training throughput",
                  caption=f"d={d} · m={m} · batch {batch} · fp32 · {threads} threads · matmul {flops / 1e9:.1f} "
                          f"GFLOP/s\n{MFU_FORMULA}")
    for col in ("trainer", "arch", "tokens/s", "MFU", "× SAELens", "peak extra MiB", "mem ÷ SAELens"):
        table.add_column(col, justify="left" if col in ("trainer", "arch") else "right")

    def fmt(v: Any, f: str) -> str:
        return "—" if v is None else format(v, f)

    for row in rows:
        if "error" in row:
            table.add_row(row.get("trainer", "?"), row.get("arch", "?"), f"failed: {row['error']}", "", "", "", "")
            continue
        table.add_row(row["trainer"], row["arch"], fmt(row["tokens_per_s"], ",.0f"), fmt(row.get("mfu"), ".0%"),
                      fmt(row.get("vs_saelens"), ".2f"), fmt(row.get("peak_extra_mib"), ",.0f"),
                      fmt(row.get("memory_vs_saelens"), ".2f"))
    console.print(table)
    return [{**r, "matmul_flops": flops, "d": d, "m": m, "batch": batch, "threads": threads} for r in rows]


def main(argv: list[str] | None = None) -> None:
    """One measurement of our trainer in this (fresh) process; prints one JSON line."""
    p = argparse.ArgumentParser()
    p.add_argument("--arch", required=True)
    p.add_argument("--d", type=int, default=576)
    p.add_argument("--m", type=int, default=4608)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--acts", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(json.dumps(measure_ours(a.arch, a.d, a.m, a.batch, a.k, a.steps, a.warmup, a.seed, a.acts)))


if __name__ == "__main__":
    main()
