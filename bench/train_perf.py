"""`python -m bench perf --train`: SAE training throughput against SAELens, MFU and peak memory per step.

What is timed, per architecture (d, m = ratio·d, batch B, k, fp32, the same torch thread count on both sides):

- ours: one process (`python -m bench.train_perf --arch SPEC --serve`) steps `methods.trainer.SAETraining`, the
  object a run trains each SAE with, in its main thread with `--threads` torch threads, on random normal
  activations (four batches drawn beforehand, cycled). A step is `SAETraining.step`: the variant's forward
  pass and loss, backward, the unit-decoder gradient projection, Adam, the decoder renormalisation,
  dead-latent counters and loss logging.
- SAELens: one process per configuration of the same architecture (`benchmarks/saelens_side.py --serve`, run
  by the python of a separate venv that has sae-lens; decompbench never imports it): SAELens' own training SAE
  stepped by SAELens' own `SAETrainer`, per step what `SAETrainer.fit` runs with wandb off (the script's
  docstring lists it). Every configuration knob that changes SAELens' CPU speed is timed (`SAELENS_CONFIGS`:
  TopK with and without `rescale_acts_by_decoder_norm` and with `use_sparse_activations`; the dense variants
  with and without torch.compile), and ours is compared with the fastest of them.

Fairness: every process warms up (`--warmup` steps, then one untimed memory-probe step) before anything is
timed, then stays alive; the driver runs `--rounds` rounds, and in each round asks every process of the
architecture, one at a time (the order reversed every other round), for a block of `--steps` timed steps.
A rate is the best block's: best-of-rounds, interleaved, so that the machine's noise hits both sides alike.
Neither side reaches its dead-latent threshold during a measurement (ours: `dead_after_tokens` set out of
reach; SAELens: `dead_feature_window` = 1,000 steps, its default), so neither computes an AuxK term; both
sides are at initialisation, where ReLU-like codes are dense (our sparse path only starts once few fire).

Whole pass: `methods.trainer.train_saes`, the entry point a run trains its SAEs with, on all the architectures
at once (one shared batch per step; on a CPU the trainer spreads the SAEs over `--threads` worker threads), timed
the same way after the single ones and including the drawing of its batches, against the rate the single-SAE
rates of the same run predict: k SAEs sharing a pass take the sum of their step times, so the expected rate is
1 / Σ 1/rate_i. Above 1 the pass gains from running SAEs side by side; below it, it loses to its own overhead.

    MFU = steps/s × 12·B·d·m FLOPs ÷ matmul FLOP/s

12·B·d·m counts a dense SAE step (encoder and decoder matmuls, forward 4·B·d·m, backward 8·B·d·m); the matmul
FLOP/s is this machine's fp32 rate on the step's own three matmul shapes, measured before and after the
timings. A sparse step (TopK family) does less than 12·B·d·m work, so its "MFU" can pass 100%.

Peak extra memory per step: resident memory before one step (after the warm-up steps) against the high-water
mark during it (Linux `/proc/self/status` VmHWM, reset through `/proc/self/clear_refs`), each process its own.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from bench.errors import BenchError
from bench.perf import best_seconds

SAELENS_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "saelens_side.py"
# Our method -> (SAELens architecture, the configurations of it to time: saelens_side.py flags). Every SAELens
# option that changes its CPU speed: `use_sparse_activations` (TopK only, and on a CPU only without the
# decoder-norm rescaling), `rescale_acts_by_decoder_norm` (TopK family; SAELens' default, and pure extra work:
# two elementwise [B, m] products and their backward) and torch.compile (SAELens' `compile_sae`).
SAELENS_CONFIGS: dict[str, tuple[str, list[list[str]]]] = {
    "sae-relu": ("standard", [[], ["--compile"]]),
    "sae-topk": ("topk", [[], ["--no-rescale"], ["--sparse", "--no-rescale"]]),
    "sae-batchtopk": ("batchtopk", [["--no-rescale"]]),
    "sae-jumprelu": ("jumprelu", [[], ["--compile"]]),
    "sae-gated": ("gated", [[], ["--compile"]]),
    "sae-matryoshka": ("matryoshka", [["--no-rescale"]]),
}
# Configurations measured slower than one above on a CPU (2 cores, d=576, m=4,608, B=4,096: compiled TopK 3,171
# tokens/s against 4,445 uncompiled, BatchTopK 2,927 against 3,347, Matryoshka level; the rescaling costs
# 10-20%), timed only with `saelens_all` (`--saelens-all`): compiling takes 5-25 s a process.
SAELENS_SLOWER: dict[str, list[list[str]]] = {
    "sae-topk": [["--no-rescale", "--compile"]],
    "sae-batchtopk": [[], ["--no-rescale", "--compile"]],
    "sae-matryoshka": [[], ["--no-rescale", "--compile"]],
}
MFU_FORMULA = "MFU = steps/s × 12·B·d·m FLOPs ÷ matmul FLOP/s (fp32, the step's matmul shapes, same run)"
OUT_OF_REACH = 10**15  # dead_after_tokens: no latent counts as dead while we measure


def matmul_flops(batch: int, d: int, m: int, repeats: int = 3) -> float:
    """fp32 FLOP/s over the three matmul shapes of an SAE step: x@W_enc.T, c@W_dec, g.T@x."""
    g = torch.Generator().manual_seed(0)
    x, w, c = (torch.randn(s, generator=g) for s in ((batch, d), (m, d), (batch, m)))
    products: list[Callable[[], Any]] = [lambda: x @ w.T, lambda: c @ w, lambda: c.T @ x]
    return 3 * 2 * batch * d * m / sum(best_seconds(fn, repeats) for fn in products)


def expected_pass_rate(rates: list[float]) -> float:
    """Tokens/s of SAEs sharing one pass when each step costs what it costs alone: 1 / Σ 1/rate_i."""
    return 1.0 / sum(1.0 / r for r in rates)


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


# --------------------------------------------------------------------------- our side (in its own process)
class _Stop(Exception):
    """Ends `train_saes` from its progress callback once the driver says quit."""


class _Replies:
    """The measuring process's half of the protocol: one ready line, then a `{"seconds", "steps"}` line for each
    `run N` command, until `quit` (or the end of the commands)."""

    def __init__(self, commands: Iterator[str], emit: Callable[[dict[str, Any]], None]) -> None:
        self.commands, self.emit = commands, emit

    def next_block(self) -> int | None:
        cmd = next(self.commands, "quit").split()
        return None if not cmd or cmd[0] == "quit" else int(cmd[1])


def _build(specs: list[str], d: int, m: int, batch: int, k: int, seed: int) -> list[Any]:
    import methods

    built = []
    for spec in specs:
        params: dict[str, Any] = {"dict_ratio": m / d, "batch_size": batch, "epochs": 10.0**6,
                                  "dead_after_tokens": OUT_OF_REACH}
        method = methods.build_method(spec, params, seed=seed)  # an unknown spec: its one-line BenchError
        if "k" in methods.method_fields(type(method)):  # the spec's own k, if it sets one, still wins
            method = methods.build_method(spec, {**params, "k": k}, seed=seed)
        built.append(method)
    return built


def _data(d: int, batch: int, seed: int, acts: str | None) -> torch.Tensor:
    import numpy as np

    return (torch.from_numpy(np.load(acts)).float() if acts
            else torch.randn(4 * batch, d, generator=torch.Generator().manual_seed(seed)))


def serve_step(spec: str, d: int, m: int, batch: int, k: int, warmup: int, seed: int, replies: _Replies,
               acts: str | None = None) -> None:
    """One SAE's step, `SAETraining.step`, in this thread with torch's threads as set: the step the run takes,
    timed apart from how a pass schedules it. Batches are drawn beforehand (four, cycled)."""
    from methods.trainer import SAETraining

    (method,) = _build([spec], d, m, batch, k, seed)
    data = _data(d, batch, seed, acts)
    training = SAETraining(method, method.make(d, data), total=10**9)
    g = torch.Generator().manual_seed(seed)
    batches = [data[torch.randint(0, len(data), (batch,), generator=g)] for _ in range(4)]
    done = 0

    def run(n: int) -> None:
        nonlocal done
        for _ in range(n):
            training.step(batches[done % len(batches)], done + 1000)  # past the warm-up ramps
            done += 1

    run(warmup)
    gc.collect()
    peak = peak_extra_mib(lambda: run(1))
    replies.emit({"ready": True, "trainer": "decompbench", "arch": spec, "config": "SAETraining.step",
                  "peak_extra_mib": peak, "threads": torch.get_num_threads(), "data": acts or "randn"})
    while (n := replies.next_block()) is not None:
        start = time.perf_counter()
        run(n)
        replies.emit({"seconds": time.perf_counter() - start, "steps": n})
    replies.emit({"done": True, "l0": training.last.get("l0")})


def serve_pass(specs: list[str], d: int, m: int, batch: int, k: int, warmup: int, steps: int, seed: int,
               replies: _Replies, acts: str | None = None) -> None:
    """`train_saes` on all `specs` at once, as a run trains the SAEs of one pass, timed from its progress calls.

    The trainer steps its SAEs in chunks of batches and reports progress when a chunk is done, so a block must
    end where a chunk does: a step-count `Checkpointing` without a directory (nothing is written) ends a chunk
    every `steps` steps, and the warm-up is rounded up to whole blocks. The first block after it is the memory
    probe (peak over a block: memory is returned between steps). Blocks include drawing the batches."""
    from bench.store import ArraySplit
    from methods.trainer import Checkpointing, train_saes

    built = _build(specs, d, m, batch, k, seed)
    state: dict[str, Any] = {"until": -(-warmup // steps) * steps, "phase": "warmup", "start": 0.0, "rss": 0}

    def progress(done: int, total: int) -> None:
        if done < state["until"]:
            return
        if state["phase"] == "warmup":
            gc.collect()
            state["phase"], state["rss"], state["until"] = "probe", _status_kib("VmRSS"), done + steps
            Path("/proc/self/clear_refs").write_text("5")
            return
        if state["phase"] == "probe":
            state["phase"] = "timed"
            replies.emit({"ready": True, "trainer": "decompbench", "arch": "+".join(specs), "config": "train_saes",
                          "peak_extra_mib": (_status_kib("VmHWM") - state["rss"]) / 1024,
                          "threads": torch.get_num_threads(), "data": acts or "randn"})
        else:
            replies.emit({"seconds": time.perf_counter() - state["start"], "steps": steps})
        n = replies.next_block()
        if n is None:
            raise _Stop
        if n != steps:
            raise ValueError(f"this pass times blocks of {steps} steps, not {n}")
        state["until"], state["start"] = done + steps, time.perf_counter()

    try:
        train_saes(built, ArraySplit(_data(d, batch, seed, acts)), progress=progress,
                   checkpoint=Checkpointing(every_steps=steps))
    except _Stop:
        pass
    replies.emit({"done": True})


# --------------------------------------------------------------------------- the driver
class Worker:
    """A measuring process: warms up, says it is ready, then times `run N` blocks when asked. A failure (it
    exits, or answers nonsense) is kept as a one-line `error` and the worker answers nothing more."""

    def __init__(self, cmd: list[str]) -> None:
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     text=True, bufsize=1)
        self.info: dict[str, Any] = {}
        self.seconds: list[float] = []
        self.steps = 0
        self.error: str | None = None

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        self.proc.wait()
        self.err.seek(0)
        tail = [ln for ln in self.err.read().strip().splitlines() if ln.strip()] or [f"exit {self.proc.returncode}"]
        raise RuntimeError(tail[-1].strip()[:200])

    def _ask(self, line: str) -> dict[str, Any] | None:
        if self.error is not None:
            return None
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            return self._read()
        except (RuntimeError, OSError, ValueError) as e:
            self.error = str(e) or type(e).__name__
            return None

    def ready(self) -> None:
        try:
            self.info = self._read()
        except (RuntimeError, ValueError) as e:
            self.error = str(e)

    def run(self, steps: int) -> None:
        reply = self._ask(f"run {steps}")
        if reply is not None:
            self.seconds.append(float(reply["seconds"]))
            self.steps = steps

    def close(self) -> None:
        self._ask("quit")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()

    def row(self, batch: int) -> dict[str, Any]:
        out = {k: v for k, v in self.info.items() if k != "ready"}
        if self.error is not None or not self.seconds:
            return {**out, "error": self.error or "no timed block"}
        best = min(self.seconds)
        return {**out, "steps_per_s": self.steps / best, "tokens_per_s": self.steps * batch / best,
                "block_seconds": self.seconds}


def interleave(workers: list[Worker], rounds: int, steps: int) -> None:
    """Start, then `rounds` rounds of one block each, the order reversed every other round, then stop."""
    for w in workers:
        w.ready()
    for r in range(rounds):
        for w in workers if r % 2 == 0 else workers[::-1]:
            w.run(steps)
    for w in workers:
        w.close()


def compare(rows: list[dict[str, Any]]) -> None:
    """Mark each architecture's fastest SAELens configuration and set ours against it (in place)."""
    for row in rows:
        if row.get("trainer") != "decompbench" or "tokens_per_s" not in row:
            continue
        theirs = [r for r in rows if r.get("trainer") == "sae-lens" and r.get("ours") == row["arch"]
                  and "tokens_per_s" in r]
        if not theirs:
            continue
        ref = max(theirs, key=lambda r: r["tokens_per_s"])
        ref["fastest"] = True
        row["vs_saelens"] = row["tokens_per_s"] / ref["tokens_per_s"]
        row["saelens_config"] = ref["config"]
        if row.get("peak_extra_mib") and ref.get("peak_extra_mib"):
            row["memory_vs_saelens"] = row["peak_extra_mib"] / ref["peak_extra_mib"]


def train_throughput(archs: list[str], d: int, ratio: float, batch: int, k: int, steps: int, warmup: int,
                     threads: int, saelens_python: str | None, console, rounds: int = 3,
                     whole_pass: bool = True, saelens_all: bool = False) -> list[dict[str, Any]]:
    """Time each architecture against SAELens, then the whole pass; print the table, return the rows.
    `saelens_all` also times the SAELens configurations measured slower here (`SAELENS_SLOWER`)."""
    from rich.table import Table

    m = round(ratio * d)
    torch.set_num_threads(threads)
    shape = ["--batch", str(batch), "--k", str(k), "--warmup", str(warmup), "--threads", str(threads)]
    ours = [sys.executable, "-m", "bench.train_perf", "--serve", "--d", str(d), "--m", str(m), "--steps", str(steps),
            *shape]
    flops = matmul_flops(batch, d, m)
    rows: list[dict[str, Any]] = []
    for spec in archs:
        labelled = [({"trainer": "decompbench", "config": "SAETraining.step"}, Worker([*ours, "--arch", spec]))]
        arch, configs = SAELENS_CONFIGS.get(spec.split("[")[0], ("", []))
        configs = configs + (SAELENS_SLOWER.get(spec.split("[")[0], []) if saelens_all else [])
        for flags in configs if saelens_python else []:
            label = {"trainer": "sae-lens", "arch": arch, "config": "+".join(f[2:] for f in flags) or "default"}
            labelled.append((label, Worker([saelens_python, str(SAELENS_SCRIPT), "--serve", "--arch", arch,
                                            "--d-in", str(d), "--d-sae", str(m), *shape, *flags])))
        began = time.perf_counter()
        with console.status(f"timing {spec} ({len(labelled)} processes, {rounds} rounds of {steps} steps) …"):
            interleave([w for _, w in labelled], rounds, steps)
        wall = {"wall_s": time.perf_counter() - began}  # this architecture's share of the command's time
        rows.append({**labelled[0][0], **labelled[0][1].row(batch), "arch": spec, **wall})
        rows += [{**label, **w.row(batch), "ours": spec, **wall} for label, w in labelled[1:]]
    singles = [r for r in rows if r["trainer"] == "decompbench"]
    if whole_pass and len(archs) > 1:
        worker = Worker([*ours, *(a for spec in archs for a in ("--arch", spec))])
        began = time.perf_counter()
        with console.status(f"timing the whole pass of {len(archs)} SAEs …"):
            interleave([worker], rounds, steps)
        row = {**worker.row(batch), "trainer": "decompbench", "arch": f"one pass: {len(archs)} SAEs",
               "config": "train_saes", "sae_steps": len(archs), "wall_s": time.perf_counter() - began}
        if all("tokens_per_s" in r for r in singles) and "tokens_per_s" in row:
            row["expected_tokens_per_s"] = expected_pass_rate([r["tokens_per_s"] for r in singles])
            row["vs_expected"] = row["tokens_per_s"] / row["expected_tokens_per_s"]
        rows.append(row)
    flops = (flops + matmul_flops(batch, d, m)) / 2  # before and after: the machine's rate during the run
    for row in rows:
        if "steps_per_s" in row:
            row["mfu"] = row["steps_per_s"] * row.get("sae_steps", 1) * 12 * batch * d * m / flops
    compare(rows)
    _print_table(rows, d, m, batch, threads, flops, rounds, steps, console, Table)
    return [{**r, "matmul_flops": flops, "d": d, "m": m, "batch": batch, "threads": threads, "rounds": rounds,
             "steps_per_block": steps} for r in rows]


def _print_table(rows, d, m, batch, threads, flops, rounds, steps, console, Table) -> None:
    passes = [r for r in rows if "vs_expected" in r]
    caption = (f"d={d} · m={m} · batch {batch} · fp32 · {threads} threads · best of {rounds} interleaved blocks of "
               f"{steps} steps · matmul {flops / 1e9:.1f} GFLOP/s\n{MFU_FORMULA}\n× SAELens: against its fastest "
               "configuration of the same architecture (★)")
    for p in passes:
        caption += (f"\n{p['arch']}: {p['tokens_per_s']:,.0f} tokens/s; the single rates predict "
                    f"{p['expected_tokens_per_s']:,.0f} (1/Σ 1/rate_i): × {p['vs_expected']:.2f}")
    table = Table(title="SAE training throughput", caption=caption)
    for col in ("trainer", "arch", "config", "tokens/s", "MFU", "× SAELens", "peak extra MiB", "mem ÷ SAELens"):
        table.add_column(col, justify="left" if col in ("trainer", "arch", "config") else "right")

    def fmt(v: Any, f: str) -> str:
        return "—" if v is None else format(v, f)

    for row in rows:
        config = row.get("config", "?") + (" ★" if row.get("fastest") else "")
        if "error" in row:
            table.add_row(row["trainer"], row.get("arch", "?"), config, f"failed: {row['error']}", "", "", "", "")
            continue
        table.add_row(row["trainer"], row["arch"], config, fmt(row["tokens_per_s"], ",.0f"),
                      fmt(row.get("mfu"), ".0%"), fmt(row.get("vs_saelens"), ".2f"),
                      fmt(row.get("peak_extra_mib"), ",.0f"), fmt(row.get("memory_vs_saelens"), ".2f"))
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    """Our side in this (fresh) process: `--serve` answers the driver on stdin/stdout; without it, one JSON
    line for `--steps` timed steps after the warm-up. One `--arch`: its step; several: their shared pass."""
    p = argparse.ArgumentParser()
    p.add_argument("--arch", action="append", required=True, help="a method spec; several: one shared pass")
    p.add_argument("--d", type=int, default=576)
    p.add_argument("--m", type=int, default=4608)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--acts", default=None)
    p.add_argument("--serve", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    if a.serve:
        replies = _Replies(iter(sys.stdin.readline, ""), emit)
    else:
        lines: list[dict[str, Any]] = []
        replies = _Replies(iter([f"run {a.steps}", "quit"]), lines.append)
    try:
        if len(a.arch) == 1:
            serve_step(a.arch[0], a.d, a.m, a.batch, a.k, a.warmup, a.seed, replies, a.acts)
        else:
            serve_pass(a.arch, a.d, a.m, a.batch, a.k, a.warmup, a.steps, a.seed, replies, a.acts)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if not a.serve:
        ready, block = lines[0], lines[1]
        emit({**{k: v for k, v in ready.items() if k != "ready"}, "steps_per_s": block["steps"] / block["seconds"],
              "tokens_per_s": block["steps"] * a.batch / block["seconds"]})


if __name__ == "__main__":
    main()
