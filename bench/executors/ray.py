"""The Ray executor: every unit a Ray task, dependencies as object references, artifacts by path.

Each unit asks for as many CPUs as its torch threads (`--threads`; and one GPU with `--device cuda`); Ray runs as many at once as the cluster holds. A
worker killed under a unit (lost node, OOM kill) is retried by Ray (`max_retries`); a unit that raises is not
retried: it is reported, units that need it are not run, every other unit finishes, and the run ends non-zero
naming them (a rerun with the same `--out` resumes). The cache directory and the run directory must be on a
filesystem every node sees; only small values (k, record dictionaries) travel through Ray's object store.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.errors import BenchError
from bench.profile import write_units
from bench.paths import cache_dir
from bench.units import EvalPlan, Grid, KUnknown, SidePlan, Unit, plan_evals

if TYPE_CHECKING:
    from bench.runner import Runner

MAX_RETRIES = 3  # system failures (worker or node lost) per unit
FORWARDED_ENV = ("DECOMPBENCH_", "HF_", "TRANSFORMERS_", "OMP_", "MKL_")
ROOT = Path(__file__).resolve().parents[2]  # the checkout whose code the workers import


def import_ray():
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install -e .[ray] (or pip install 'ray[default]')") from None
    return ray


def runtime_env() -> dict[str, Any]:
    """Workers see this checkout's code, the cache directory and the offline switches of the driver."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    env["DECOMPBENCH_CACHE"] = str(cache_dir().resolve())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return {"env_vars": env}


class RayExecutor:
    in_process = False

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.failures: list[str] = []

    def connect(self, ray) -> None:
        common = dict(runtime_env=runtime_env(), log_to_driver=False, logging_level="warning")
        try:
            if self.address is None:  # a local Ray for this run, gone when it ends
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=256 * 2**20, **common)
            else:
                ray.init(address=self.address, **common)
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = "a local Ray" if self.address is None else f"the Ray cluster at {self.address}"
            raise BenchError(f"cannot start or reach {where} ({str(e).splitlines()[0][:160]}); check --ray-address "
                             "(auto, or HOST:PORT of the head's GCS)") from None

    def run(self, grid: Grid, runner: "Runner") -> list[dict[str, Any]]:
        ray = import_ray()
        self.connect(ray)
        try:
            if grid.cfg.device.startswith("cuda") and ray.cluster_resources().get("GPU", 0) < 1:
                raise BenchError("--device cuda with --executor ray, but the Ray cluster has no GPU; start its nodes "
                                 "with GPUs (ray start --num-gpus N) or use --device cpu")
            largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
            if largest < grid.threads:
                raise BenchError(f"each unit computes with {grid.threads} torch threads but the largest Ray node has "
                                 f"{largest:g} CPUs; pass --threads {max(1, int(largest))} (locally too, for equal numbers)")
            return _Schedule(ray, grid, runner.console).run(self.failures)
        finally:
            ray.shutdown()


class _Schedule:
    """Submits units as their inputs become known, collects outcomes, plans evaluations once k is known."""

    def __init__(self, ray, grid: Grid, console) -> None:
        from bench.executors.ray_worker import run_unit

        self.ray, self.grid, self.console = ray, grid, console
        gpu = 1 if grid.cfg.device.startswith("cuda") else 0
        self.remote = ray.remote(run_unit)
        # A unit asks for as many CPUs as it runs torch threads: two 2-thread units on 2 cores would spin-wait
        # on each other (several times slower), and the thread count must be the local one for equal numbers.
        self.resources = dict(num_cpus=grid.threads, num_gpus=gpu, max_retries=MAX_RETRIES, retry_exceptions=False)
        self.args = (ray.put(grid.cfg), str(grid.out.resolve()), grid.threads, os.getcwd())
        self.refs: dict[Unit, Any] = {}
        self.pending: dict[Any, Unit] = {}
        self.deps: dict[Unit, list[Unit]] = {}
        self.outcome: dict[Unit, dict[str, Any]] = {}
        self.evals: dict[int, EvalPlan] = {}
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.bar = self.progress.add_task("ray units", total=0)

    def submit(self, unit: Unit, deps: list[Unit]) -> None:
        deps = list(dict.fromkeys(deps))
        ref = self.remote.options(name=unit.name[:120], **self.resources).remote(*self.args, unit, *(self.refs[d] for d in deps))
        self.refs[unit], self.pending[ref], self.deps[unit] = ref, unit, deps
        self.progress.update(self.bar, total=len(self.refs))

    def k_of(self, plan: SidePlan):
        """The k a side's rows use, KUnknown if its unit failed, or `self` while it is still running."""
        source = self.grid.plans[0] if plan.k_from_trained else plan
        if source.k_unit is None:
            return source.k
        outcome = self.outcome.get(source.k_unit)
        if outcome is None:
            return self
        return outcome["value"] if outcome["status"] == "ok" else KUnknown

    def plan_ready_sides(self) -> None:
        for i, plan in enumerate(self.grid.plans):
            if i in self.evals or (k := self.k_of(plan)) is self:
                continue
            self.evals[i] = evals = plan_evals(self.grid.cfg, plan, k)
            for note in evals.notes:
                self.progress.console.print(escape(note), highlight=False)
            for unit in evals.units:  # in task order: a worker meets the rows of one task together
                self.submit(unit, [plan.harvest, *(plan.fit_of(row.base) for row in unit.rows)])

    def collect(self, ref) -> None:
        unit = self.pending.pop(ref)
        try:
            result = self.ray.get(ref)
            self.outcome[unit] = {"status": "ok", **result}
            note = f"{result['seconds']:.1f} s"
        except self.ray.exceptions.RayError as e:
            cause = getattr(e, "cause", None) or e
            message = next((line for line in str(cause).splitlines() if line.strip()), "")[:240]
            self.outcome[unit] = {"status": "failed", "error": f"{type(cause).__name__}: {message}"}
            note = "[red]failed[/]"
        self.progress.console.print(f"  {escape(unit.name)}  {note}", highlight=False)
        self.progress.advance(self.bar)

    def run(self, failures: list[str]) -> list[dict[str, Any]]:
        start = time.perf_counter()
        with self.progress:
            for plan in self.grid.plans:
                self.submit(plan.harvest, [])
                for unit in plan.fits:
                    self.submit(unit, [plan.harvest])
                if plan.k_unit is not None:
                    self.submit(plan.k_unit, [plan.harvest, plan.fit_of(plan.k_unit.reference)])
            self.plan_ready_sides()
            while self.pending:
                ready, _ = self.ray.wait(list(self.pending), num_returns=1)
                for ref in ready:
                    self.collect(ref)
                self.plan_ready_sides()
        failures.extend(self.report(time.perf_counter() - start))
        results = {u: o["value"] for u, o in self.outcome.items() if o["status"] == "ok"}
        return [r for i in range(len(self.grid.plans)) for r in self.evals[i].ordered(results)]

    def report(self, wall: float) -> list[str]:
        """Write `units.json` (each unit's outcome, seconds and worker); return one line per failed or blocked unit."""
        failed = {u for u, o in self.outcome.items() if o["status"] == "failed"}
        lines, rows = [], []
        for unit, outcome in self.outcome.items():
            blocked = [d for d in self.deps[unit] if d in failed]
            if unit in failed:
                lines.append(f"{unit.name} (not run: needs {blocked[0].name})" if blocked
                             else f"{unit.name} ({outcome['error']})")
            profile = outcome.get("profile") or {"unit": unit.name, "kind": type(unit).__name__, "status": "failed"}
            rows.append({**profile, **{k: outcome[k] for k in ("host", "pid", "error") if k in outcome}})
        left_out = sum(e.left_out for e in self.evals.values())
        if left_out:
            lines.append(f"{left_out} evaluations at matched k (k could not be measured)")
        write_units(self.grid.out, "ray", wall, rows)
        return lines

