"""Where a run's time goes: each unit's wall time, CPU time, peak memory and throughput, in `<out>/units.json`.

`measured(...)` wraps one unit. CPU time is the process's (all threads: 2 busy torch threads give ~2 s per wall
second, so `cpu_s / wall_s` reads as cores used). Peak memory is the resident set's high-water mark during the
unit, sampled every 20 ms by a background thread (the kernel's own peak, `ru_maxrss`, never goes back down, so
it cannot say which unit reached it); on CUDA also the allocator's peak. `python -m bench perf --run RUN_DIR`
prints the table (`profile_table`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bench.io import atomic_write_json

UNITS_FILE = "units.json"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident set size now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class _PeakSampler(threading.Thread):
    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, rss_bytes(), threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, rss_bytes())


@dataclass
class UnitProfile:
    """One unit's measurements. `work` counts what it processed (`tokens`: activations harvested or trained on;
    `forward_tokens`: tokens through the subject model), for throughput."""

    unit: str
    kind: str  # harvest | fit | matched_k | evaluate
    status: str = "ok"
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float | None = None
    work: dict[str, float] = field(default_factory=dict)
    cached: bool = False  # found its output already there (a resumed run): it does not replace an earlier profile
    extra: dict[str, Any] = field(default_factory=dict)  # where it ran (Ray: host, pid), why it failed

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        return {**{k: v for k, v in out.items() if k != "extra"}, **self.extra}


@contextmanager
def measured(unit: str, kind: str, device: str = "cpu") -> Iterator[UnitProfile]:
    """Measure the block as one unit; a failure is recorded (status "failed") and re-raised."""
    profile = UnitProfile(unit, kind)
    cuda = device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    sampler = _PeakSampler()
    sampler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield profile
    except BaseException as e:
        profile.status = "failed"
        profile.extra["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:240]
        raise
    finally:
        profile.wall_s = time.perf_counter() - wall
        profile.cpu_s = time.process_time() - cpu
        profile.peak_rss_mb = sampler.stop() / 2**20
        if cuda:
            import torch

            profile.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20


def write_units(out: Path, executor: str, wall_s: float, units: list[UnitProfile | dict[str, Any]]) -> None:
    """`<out>/units.json`: rewritten after every unit, so a killed run still says where its time went. A resumed
    run keeps the earlier invocations' profiles of the units it did not redo (marked `"earlier": true`); a unit
    that found its work done (`cached`) never replaces one, and a resume that redid nothing leaves the file as is."""
    rows = [u.to_json() if isinstance(u, UnitProfile) else u for u in units]
    done = [r for r in rows if not r.get("cached")]
    path = Path(out) / UNITS_FILE
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    if old is not None and not done:
        return
    if isinstance(old, dict) and isinstance(old.get("units"), list):
        redone = {r.get("unit") for r in done}
        earlier = [{**r, "earlier": True} for r in old["units"] if isinstance(r, dict) and r.get("unit") not in redone]
        rows = earlier + done
        wall_s += sum(float(r.get("wall_s") or 0) for r in earlier)
    atomic_write_json(path, {"executor": executor, "wall_seconds": wall_s, "units": rows})


def read_units(run_dir: Path) -> dict[str, Any]:
    from bench.errors import BenchError

    path = Path(run_dir) / UNITS_FILE
    try:
        data = json.loads(path.read_text())
        data["units"] = [u for u in data["units"] if isinstance(u, dict)]
        return data
    except FileNotFoundError:
        raise BenchError(f"{path} does not exist: pass a run directory (a run's --out) made by this version") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise BenchError(f"{path} is unreadable; rerun the run to rewrite it") from None


def profile_table(run_dir: Path):
    """The run's units, longest first: seconds, share of the run, CPU cores used, peak memory, throughput."""
    from rich.markup import escape
    from rich.table import Table

    data = read_units(run_dir)
    units = sorted(data["units"], key=lambda u: -float(u.get("wall_s") or 0))
    total = float(data.get("wall_seconds") or 0) or sum(float(u.get("wall_s") or 0) for u in units) or 1.0
    table = Table(title=escape(f"{run_dir}: {len(units)} units, {total:.1f} s of wall time ({data.get('executor')} "
                               "executor); cores = CPU s / wall s"))
    for name, justify in (("unit", "left"), ("kind", "left"), ("seconds", "right"), ("share", "right"),
                          ("cores", "right"), ("peak MB", "right"), ("throughput", "right"), ("status", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    by_kind: dict[str, float] = {}
    for u in units:
        wall, cpu = float(u.get("wall_s") or 0), float(u.get("cpu_s") or 0)
        by_kind[u.get("kind", "?")] = by_kind.get(u.get("kind", "?"), 0.0) + wall
        work = u.get("work") or {}
        rates = [f"{work[k] / wall:,.0f} {label}/s" for k, label in (("tokens", "tok"), ("forward_tokens", "fwd tok"))
                 if work.get(k) and wall > 0]
        peak = u.get("peak_rss_mb")
        if u.get("peak_gpu_mb") is not None:
            peak = f"{peak:,.0f} (GPU {u['peak_gpu_mb']:,.0f})"
        table.add_row(escape(str(u.get("unit", "?"))), str(u.get("kind", "?")), f"{wall:.1f}", f"{wall / total:.1%}",
                      f"{cpu / wall:.2f}" if wall > 0 else "", peak if isinstance(peak, str) else f"{peak or 0:,.0f}",
                      ", ".join(rates), str(u.get("status", "?")))
    table.caption = "  ·  ".join(f"{kind} {s:.1f} s ({s / total:.0%})" for kind, s in
                                 sorted(by_kind.items(), key=lambda kv: -kv[1]))
    return table


def phase_table(run_dir: Path):
    """Where each SAE's training steps went (`timing.step_seconds` in its dictionary.json, methods.phases): ms per
    step by phase, and the shared pass's own time (reading batches, checkpoints). None when no SAE recorded laps."""
    from rich.markup import escape
    from rich.table import Table

    from methods.phases import PHASES

    rows, shared = [], {}
    for path in sorted(Path(run_dir).glob("**/dictionaries/*/dictionary.json")):
        try:
            meta = json.loads(path.read_text())["meta"]
            info, timing = meta["fit_info"], meta["timing"]
            phases, steps = timing["step_seconds"], int(info["steps"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if phases and steps > 0:
            rows.append((path.parent.relative_to(run_dir).as_posix(), phases, steps))
            shared[str(info.get("data_seed"))] = (timing.get("pass_seconds") or {}, steps)
    if not rows:
        return None
    table = Table(title="SAE training: milliseconds per step by phase (methods/phases.py)")
    table.add_column("dictionary", overflow="fold")
    for name in (*PHASES, "total"):
        table.add_column(name, justify="right")
    for label, phases, steps in rows:
        cells = [1e3 * float(phases.get(p, 0.0)) / steps for p in PHASES]
        table.add_row(escape(label), *(f"{c:.2f}" for c in cells), f"{sum(cells):.1f}")
    table.caption = "  ·  ".join(f"pass {k} {1e3 * float(v) / steps:.2f} ms/step" for pass_seconds, steps in
                                 shared.values() for k, v in sorted(pass_seconds.items()))
    return table
