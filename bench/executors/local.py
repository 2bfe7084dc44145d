"""The local executor: every unit in this process, one side after the other, with the run's progress bars."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench.errors import BenchError
from bench.profile import write_units
from bench.units import Grid, KUnknown, SidePlan, plan_evals
from bench.worker import EvalHooks, Workspace

if TYPE_CHECKING:
    from bench.runner import Runner


def progress_bars(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


class LocalExecutor:
    """Harvest, fit, k and evaluations of each side in order. A harvest, fit or k that fails ends the run (what
    follows needs it); an evaluation that fails with a one-line error (a judge outage) is listed in `failures` and
    the others go on: the runner publishes what finished, then reports them (exit 1; a rerun retries them)."""

    in_process = True

    def run(self, grid: Grid, runner: "Runner") -> list[dict[str, Any]]:
        ws = Workspace(grid.cfg, grid.out, judge_loader=runner.judge, docs=runner.docs)
        self.started = time.perf_counter()
        self.failures: list[str] = []
        records: list[dict[str, Any]] = []
        trained_k: int | None | type[KUnknown] = None
        with progress_bars(runner.console) as progress:
            for plan in grid.plans:
                k = self.run_side(ws, grid, plan, trained_k, progress, records)
                if plan.side.control is None:
                    trained_k = k
                ws.release(plan.side.control)  # one side's model and prepared tasks in memory at a time
        return records

    def run_side(self, ws: Workspace, grid: Grid, plan: SidePlan, trained_k, progress: Progress,
                 records: list[dict[str, Any]]):
        side = plan.side
        self._with_bar(progress, f"{side.prefix}harvest {side.spec.hook}",
                       lambda report: self.unit(ws, grid, plan.harvest, progress=report))
        for unit in plan.fits:
            if unit.cached:
                self.unit(ws, grid, unit)  # checked against the settings, not refitted: no bar, as before
            else:
                self._with_bar(progress, f"{side.prefix}fit " + escape(", ".join(unit.labels)),
                               lambda report, unit=unit: self.unit(ws, grid, unit, progress=report))
        k = trained_k if plan.k_from_trained else (self.unit(ws, grid, plan.k_unit) if plan.k_unit else plan.k)
        evals = plan_evals(grid.cfg, plan, k)
        for note in evals.notes:
            progress.console.print(escape(note), highlight=False)
        results = {}
        for task_label, _ in plan.tasks:
            units = [u for u in evals.units if u.task == task_label]
            if not units:
                continue
            bar = progress.add_task(f"{side.prefix}task {escape(task_label)}", total=sum(len(u.rows) for u in units) + 1)
            # Long tasks (autointerp) report their own steps on a second line.
            detail = progress.add_task(f"  {escape(task_label)}: prepare", total=None, visible=False)
            prepared: list[bool] = []

            def on_prepared(bar=bar, prepared=prepared) -> None:
                if not prepared:
                    prepared.append(True)
                    progress.advance(bar)

            hooks = EvalHooks(
                prepared=on_prepared,
                start=lambda label, detail=detail, t=task_label: progress.update(
                    detail, description=f"  {escape(t)}: {escape(label)}", completed=0, total=None),
                done=lambda label, bar=bar: progress.advance(bar),
                detail=lambda d, t, detail=detail: progress.update(detail, completed=d, total=t, visible=True))
            for unit in units:
                try:
                    results[unit] = self.unit(ws, grid, unit, hooks=hooks)
                except BenchError as e:
                    self.failures.append(f"{unit.name} ({e})")
                    progress.console.print(f"[red]failed[/] {escape(unit.name)}: {escape(str(e))}", highlight=False)
            progress.update(detail, visible=False)
        records.extend(evals.ordered(results))
        return k

    def unit(self, ws: Workspace, grid: Grid, unit, **hooks) -> Any:
        """Run one unit, measured; units.json is rewritten after each (a killed run still has its profile)."""
        try:
            return ws.run_unit(unit, **hooks)
        finally:
            write_units(grid.out, "local", time.perf_counter() - self.started, ws.profiles)

    @staticmethod
    def _with_bar(progress: Progress, description: str, work) -> Any:
        """Run `work(report)` under a bar that shows its (done, total); a bar that never learnt a total ends full."""
        bar = progress.add_task(description, total=None)
        out = work(lambda done, total: progress.update(bar, completed=done, total=total))
        if progress.tasks[bar].total is None:
            progress.update(bar, completed=1, total=1)
        return out
