"""The run: model -> activations -> methods -> dictionaries -> tasks -> result files -> leaderboard.

Every stage resumes: the activation store is keyed and shared across runs, fitted dictionaries and results are
saved in the run directory and reused when the run is repeated with the same `--out`.

The work is planned as units (`bench.units`: harvest, fit, matched k, evaluate) and run by an executor
(`bench.executors`): in this process by default, or on a Ray cluster with `--executor ray`. Both write the same
files with the same numbers.

With `--control` the whole pipeline runs twice, once per `Side`: first on the trained model (its results where
they always are, so an earlier run's resume), then on the control model, whose activations, dictionaries,
checkpoints and results are its own (`controls/<name>/` in the run directory). Records say which side made
them (`"control"`); `reports.controls` pairs them.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

import methods as method_registry
from bench.config import RunConfig
from bench.corpus import corpus_fingerprint, load_corpus
from bench.executors import Executor, UnitsFailed
from bench.executors.local import LocalExecutor
from bench.harvest import HarvestSpec
from bench.io import atomic_write_json, atomic_write_text
from bench.judge import Judge, make_judge
from bench.judge.base import redact_url
from bench.models import check_control, model_fingerprint, resolve_model
from bench.results import environment, now
from bench.rundir import RunLock, check_resumable
from bench.units import Grid, Side, build_methods, build_tasks, judge_work_left, plan_side, side_work
from methods.base import Method
from reports.controls import build_control_tables, controls_markdown, controls_rich
from reports.history import record_run
from reports.leaderboard import build_leaderboards, to_markdown, to_rich
from reports.sweeps import sweep_curves
from tasks.base import Task


class Runner:
    """Runs one configuration into one output directory."""

    def __init__(self, cfg: RunConfig, out: Path, console: Console | None = None, executor: Executor | None = None,
                 threads: int | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.console = console or Console(stderr=True)
        self.executor = executor or LocalExecutor()
        self.threads = threads or torch.get_num_threads()  # every unit computes with this many (bit-reproducibility)
        self._judge: Judge | None = None
        self.docs: list | None = None  # the text, read once while planning (the local harvest reuses it)
        self.env = environment()

    def judge(self) -> Judge:
        if self._judge is None:
            where = redact_url(self.cfg.judge.base_url) if self.cfg.judge.base_url else self.cfg.judge.judge
            with self.console.status(f"loading the judge {where} …"):
                self._judge = make_judge(self.cfg.judge)
        return self._judge

    def build_methods(self) -> list[tuple[str, Method]]:
        return build_methods(self.cfg)

    def build_tasks(self) -> list[tuple[str, Task]]:
        return build_tasks(self.cfg)

    def plan_activations(self) -> tuple[HarvestSpec, list]:
        """Resolve model, hook and text without loading the model: bad input fails before any work."""
        cfg = self.cfg
        entry = resolve_model(cfg.model)
        docs = load_corpus(cfg.text)
        spec = HarvestSpec(
            model=entry.name, model_fingerprint=model_fingerprint(entry), hook=cfg.hook(entry.default_layer),
            corpus_fingerprint=corpus_fingerprint(docs), ctx_len=cfg.ctx_len, train_contexts=cfg.train_contexts,
            eval_contexts=cfg.eval_contexts, exclusion=cfg.exclusion,
        )
        return spec, docs

    def sides(self, spec: HarvestSpec) -> list[Side]:
        """The trained model, then the control if one was asked for."""
        sides = [Side(None, self.out, spec)]
        if self.cfg.control is not None:
            fp = model_fingerprint(resolve_model(self.cfg.model), self.cfg.control, self.cfg.seed)
            sides.append(Side(self.cfg.control, self.out / "controls" / self.cfg.control,
                              replace(spec, model_fingerprint=fp)))
        return sides

    # --- the whole run -----------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        check_control(cfg.control)
        built = self.build_methods()
        task_list = self.build_tasks()
        for _, method in built:
            method.preflight()  # e.g. a released SAE's directory: checked now, not after minutes of harvesting
        spec, self.docs = self.plan_activations()
        sides = self.sides(spec)
        config = cfg.recorded()
        with RunLock(self.out):  # one run per directory; nothing below writes before every check has passed
            check_resumable(self.out, config)
            # A control gets fresh methods and tasks: nothing fitted or prepared carries over.
            plans = tuple(plan_side(cfg, side, *side_work(side, *((built, task_list) if side.control is None
                                                                 else (self.build_methods(), self.build_tasks()))))
                          for side in sides)
            if any(judge_work_left(cfg, plan) for plan in plans):
                self.judge()  # an unusable judge fails now, in one line, before any harvesting or fitting
                if not self.executor.in_process:
                    self._judge.close()  # the units load their own
                    self._judge = None
            for note in (n for plan in plans for n in plan.notes):
                self.console.print(escape(note))
            atomic_write_json(self.out / "config.json", {"config": config, **self.env, "started": now()})

            records = self.executor.run(Grid(cfg, self.out, plans, self.threads), self)

            self.publish(records, [m for m in method_registry.REGISTRY])
        if self._judge is not None:
            self._judge.close()
        if failures := getattr(self.executor, "failures", None):
            raise UnitsFailed.listing(failures)  # after the leaderboard of what finished
        return records

    def publish(self, records: list[dict[str, Any]], order: list[str]) -> None:
        trained = [r for r in records if r.get("control") is None]
        boards = build_leaderboards(trained, order)
        controls = build_control_tables(records, order)  # empty without a control: the files are as they were
        md = "# decompbench leaderboard\n\n" + to_markdown(boards)
        atomic_write_text(self.out / "leaderboard.md", md + (controls_markdown(controls) if controls else ""))
        atomic_write_json(self.out / "leaderboard.json", {"boards": [b.to_json() for b in boards],
                                                          **({"controls": [c.to_json() for c in controls]}
                                                             if controls else {})})
        if curves := sweep_curves(trained):
            atomic_write_json(self.out / "sweeps.json", curves)
        out_console = Console(width=None if Console().is_terminal else 180)
        for table in [*to_rich(boards), *controls_rich(controls)]:
            out_console.print(table)
        self.console.print(f"results: {self.out}/results  ·  leaderboard: {self.out}/leaderboard.md")
        record_run(self.out, self.console)  # the results history (`python -m bench history`, docs/reports.md)


def default_out(cfg: RunConfig) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.preset}-{os.getpid()}"

