"""The run: model -> activations -> methods -> dictionaries -> tasks -> result files -> leaderboard.

Every stage resumes: the activation store is keyed and shared across runs, fitted dictionaries and results are
saved in the run directory and reused when the run is repeated with the same `--out`.

With `--control` the whole pipeline runs twice, once per `Side`: first on the trained model (its results where
they always are, so an earlier run's resume), then on the control model, whose activations, dictionaries,
checkpoints and results are its own (`controls/<name>/` in the run directory). Records say which side made
them (`"control"`); `reports.controls` pairs them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import methods as method_registry
import tasks as task_registry
from bench.config import RunConfig
from bench.corpus import corpus_fingerprint, load_corpus
from bench.dictionary import CONFIG_FILE, Dictionary, TopKDictionary, load_dictionary
from bench.errors import BenchError
from bench.harvest import HarvestSpec, harvest
from bench.io import atomic_write_json, atomic_write_text, fingerprint
from bench.judge import Judge, make_judge
from bench.models import SubjectModel, check_control, load_model, model_fingerprint, resolve_model
from bench.results import environment, now, read_result, result_path, write_result
from bench.specs import canonical_label, expand_spec, parse_spec, split_specs
from methods.base import Method
from methods.sae import SAEMethod
from methods.trainer import Checkpointing, group_key, train_saes
from reports.controls import build_control_tables, controls_markdown, controls_rich
from reports.history import record_run
from reports.leaderboard import build_leaderboards, to_markdown, to_rich
from reports.sweeps import sweep_curves
from tasks.base import Task, TaskContext


def expand_names(requested: tuple[str, ...], registry: dict[str, Any]) -> list[str]:
    """("all",) -> every registered name (but those that need an argument, `in_all = False`); comma-separated items
    are split; order kept, duplicates dropped."""
    names: list[str] = []
    for item in requested:
        for name in split_specs(item):
            if name == "all":
                names.extend(n for n, cls in registry.items() if getattr(cls, "in_all", True))
            else:
                names.append(name)
    return list(dict.fromkeys(names))


def preset_params(presets: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """A preset's settings for `name`: those of every matching pattern (`sae-*`), then the exact name's."""
    merged: dict[str, Any] = {}
    for pattern, params in presets.items():
        if pattern != name and fnmatch(name, pattern):
            merged.update(params)
    merged.update(presets.get(name, {}))
    return merged


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise BenchError(f"cannot write to output directory {out} ({e.strerror}); pass a writable --out") from None


@dataclass(frozen=True)
class Side:
    """The trained model (`control` None) or a control of it, with where its dictionaries, checkpoints and
    results go (`root`) and its activations (`spec`: a control's model fingerprint names the control)."""

    control: str | None
    root: Path
    spec: HarvestSpec

    @property
    def prefix(self) -> str:
        return "" if self.control is None else f"\\[{self.control}] "  # rich markup: \\[ is a literal [


@dataclass
class Fitted:
    """A dictionary ready for the tasks, with where it came from (tasks never see this)."""

    label: str
    method: Method
    dictionary: Dictionary
    fit_seconds: float
    fit_info: dict[str, Any]
    matched_k: int | None = None


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


class Runner:
    """Runs one configuration into one output directory."""

    def __init__(self, cfg: RunConfig, out: Path, console: Console | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.console = console or Console(stderr=True)
        self._models: dict[str | None, SubjectModel] = {}  # by control; one at a time in practice
        self._judge: Judge | None = None
        self.env = environment()

    # --- stages ------------------------------------------------------------------------------------------
    def model(self, control: str | None = None) -> SubjectModel:
        if control not in self._models:
            with self.console.status(f"loading {self.cfg.model}{f' ({control} control)' if control else ''} …"):
                self._models[control] = load_model(self.cfg.model, self.cfg.device, control, self.cfg.seed)
        return self._models[control]

    def judge(self) -> Judge:
        if self._judge is None:
            with self.console.status(f"loading the judge {self.cfg.judge.base_url or self.cfg.judge.judge} …"):
                self._judge = make_judge(self.cfg.judge)
        return self._judge

    @staticmethod
    def _configure(requested: tuple[str, ...], registry: dict[str, Any], presets: dict[str, dict[str, Any]],
                   build: Callable[[str, dict[str, Any]], Any], exclude: set[str] = frozenset()) -> list[tuple[str, Any]]:
        """(label, object) per requested spec, sweeps expanded; labels name the settings that differ from the preset."""
        built = []
        specs = [s for item in expand_names(requested, registry) for s in expand_spec(item)]
        for spec in dict.fromkeys(specs):
            defaults = preset_params(presets, parse_spec(spec)[0])
            obj = build(spec, defaults)
            built.append((canonical_label(obj, defaults, exclude), obj))
        return built

    def build_methods(self) -> list[tuple[str, Method]]:
        cfg = self.cfg
        return self._configure(cfg.methods, method_registry.REGISTRY, cfg.method_params,
                               lambda s, d: method_registry.build_method(s, d, cfg.seed, cfg.device), {"seed", "device"})

    def build_tasks(self) -> list[tuple[str, Task]]:
        return self._configure(self.cfg.tasks, task_registry.REGISTRY, self.cfg.task_params, task_registry.build_task)

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

    def activations(self, side: Side, docs: list, progress: Progress):
        spec = side.spec
        bar = progress.add_task(f"{side.prefix}harvest {spec.hook}", total=None)

        def report(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        store = harvest(spec, docs, lambda: self.model(side.control), self.cfg.harvest_batch, report)
        if progress.tasks[bar].total is None:
            progress.update(bar, completed=1, total=1)
        return store

    @staticmethod
    def _dictionary_dir(side: Side, label: str) -> Path:
        return side.root / "dictionaries" / label.replace("/", "_")

    def cached_fit(self, side: Side, label: str, method: Method, store) -> Fitted | None:
        """A dictionary this run directory already holds for `label`, checked against the settings."""
        directory = self._dictionary_dir(side, label)
        if not (directory / CONFIG_FILE).exists():
            return None
        dictionary = load_dictionary(directory, self.cfg.device)
        if dictionary.d_in != store.d_model:
            raise BenchError(f"dictionary {directory} has dimension {dictionary.d_in} but the hook gives "
                             f"{store.d_model}; use another --out or delete that directory")
        meta = json.loads((directory / CONFIG_FILE).read_text())["meta"]
        if meta.get("params") != asdict(method) or meta.get("activations") != store.manifest["key"]:
            raise BenchError(f"{directory} was fitted with other settings or activations; "
                             "use a new --out (finished results there are kept)")
        return Fitted(label, method, dictionary, meta.get("fit_seconds", 0.0), meta.get("fit_info", {}))

    def _save_fit(self, side: Side, label: str, method: Method, dictionary: Dictionary, seconds: float,
                  store) -> Fitted:
        dictionary.save(self._dictionary_dir(side, label), {
            "method": label, "params": asdict(method), "fit_seconds": seconds, "fit_info": method.fit_info_,
            "activations": store.manifest["key"], "hook": store.hook, "model": store.manifest["spec"]["model"],
            "control": side.control})
        return Fitted(label, method, dictionary, seconds, dict(method.fit_info_))

    def fit_all(self, side: Side, built: list[tuple[str, Method]], store, progress: Progress) -> list[Fitted]:
        """Fit (or reuse) every method. SAEs that can share a pass over the data train together: a sweep
        `sae-topk[k=16|32|64]` or `--methods all` reads each activation batch once for all of them."""
        done: dict[str, Fitted] = {}
        groups: dict[tuple, list[tuple[str, Method]]] = {}
        for label, method in built:
            cached = self.cached_fit(side, label, method, store)
            if cached is not None:
                done[label] = cached
            else:
                key = group_key(method) if isinstance(method, SAEMethod) else ("alone", label)
                groups.setdefault(key, []).append((label, method))
        for members in groups.values():
            labels = [label for label, _ in members]
            bar = progress.add_task(f"{side.prefix}fit " + escape(", ".join(labels)), total=None)
            report = lambda d, t, bar=bar: progress.update(bar, completed=d, total=t)  # noqa: E731
            torch.manual_seed(self.cfg.seed)
            start = time.perf_counter()
            if isinstance(members[0][1], SAEMethod):
                ckpt = Checkpointing(side.root / "checkpoints" / fingerprint(labels))
                dictionaries = train_saes([m for _, m in members], store.train, report, ckpt)
            else:
                dictionaries = [members[0][1].fit(store.train, report)]
            seconds = (time.perf_counter() - start) / len(members)  # a shared pass: each SAE's share
            if progress.tasks[bar].total is None:
                progress.update(bar, completed=1, total=1)
            for (label, method), dictionary in zip(members, dictionaries, strict=True):
                done[label] = self._save_fit(side, label, method, dictionary, seconds, store)
        return [done[label] for label, _ in built]

    # --- the whole run -----------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        check_control(cfg.control)
        built = self.build_methods()
        task_list = self.build_tasks()
        spec, docs = self.plan_activations()
        sides = self.sides(spec)
        check_writable(self.out)
        atomic_write_json(self.out / "config.json", {"config": asdict(cfg), **self.env, "started": now()})
        if any(self._judge_work_left(side, *self.side_work(side, built, task_list)) for side in sides):
            self.judge()  # an unusable judge fails now, in one line, before any harvesting or fitting

        records: list[dict[str, Any]] = []
        k = None
        with _progress(self.console) as progress:
            for side in sides:
                # A control gets fresh methods and tasks: nothing fitted or prepared carries over. A finished side's
                # model and prepared tasks (loss_recovered's clean logits) are let go: one side in memory at a time.
                work = (built, task_list) if side.control is None else (self.build_methods(), self.build_tasks())
                built, task_list = [], []
                side_records, k = self.run_side(side, docs, *self.side_work(side, *work), progress, k)
                records.extend(side_records)
                del work
                self._models.pop(side.control, None)

        self.publish(records, [m for m in method_registry.REGISTRY])
        if self._judge is not None:
            self._judge.close()
        return records

    @staticmethod
    def side_work(side: Side, built: list[tuple[str, Method]], task_list: list[tuple[str, Task]]):
        """The methods and tasks a side runs: a control leaves out what it cannot change, methods that are not
        fitted on the activations (a released SAE) and tasks that never read the model (toy_superposition)."""
        if side.control is None:
            return built, task_list
        return ([(label, m) for label, m in built if m.refittable],
                [(label, t) for label, t in task_list if t.depends_on_model])

    def run_side(self, side: Side, docs: list, built: list[tuple[str, Method]], task_list: list[tuple[str, Task]],
                 progress: Progress, trained_k: int | None) -> tuple[list[dict[str, Any]], int | None]:
        """Harvest, fit and score one side; returns its records and the matched k (a control reuses the trained
        model's k, so that each top-k row compares the same sparsity on both sides)."""
        cfg, spec = self.cfg, side.spec
        store = self.activations(side, docs, progress)
        fitted = self.fit_all(side, built, store, progress)
        # The first sparse method in --methods order (registry order for `all`) sets k.
        reference = next((f for f in fitted if f.method.sparse), None)
        k = self.matched_k(fitted, reference, store) if side.control is None else trained_k
        if k is not None:
            for f in list(fitted):
                if f is reference:
                    f.matched_k = k  # the sparse method whose L0 sets k stands among the top-k rows
                elif not f.method.sparse:
                    fitted.append(Fitted(f"{f.label}@top{k}", f.method, TopKDictionary.wrap(f.dictionary, k),
                                         f.fit_seconds, f.fit_info, k))

        ctx = TaskContext(store=store, hook=spec.hook, model_loader=lambda: self.model(side.control), seed=cfg.seed,
                          device=cfg.device, judge_loader=self.judge)
        records = []
        for task_label, task in task_list:
            todo, done = [], []
            for f in fitted:
                if not task.topk_rows and f.matched_k is not None and not f.method.sparse:
                    continue
                if task.refits and not f.method.refittable:
                    continue
                path = result_path(side.root, spec.model, spec.hook, f.label, task_label)
                existing = read_result(path)
                if existing is not None and existing.get("resume_key") != self.resume_key(f, task, side):
                    raise BenchError(f"{path} holds a result from other settings; use a new --out "
                                     "(finished results there are kept)")
                (done if existing is not None else todo).append((f, path, existing))
            records.extend(r for *_, r in done)
            if not todo:
                continue
            bar = progress.add_task(f"{side.prefix}task {escape(task_label)}", total=len(todo) + 1)
            # Long tasks (autointerp) report their own steps on a second line.
            detail = progress.add_task(f"  {escape(task_label)}: prepare", total=None, visible=False)
            report = lambda d, t, detail=detail: progress.update(detail, completed=d, total=t, visible=True)  # noqa: E731
            task_ctx = replace(ctx, progress=report)
            task.prepare(task_ctx)
            progress.advance(bar)
            for f, path, _ in todo:
                start = time.perf_counter()
                progress.update(detail, description=f"  {escape(task_label)}: {escape(f.label)}", completed=0, total=None)
                method_ctx = replace(task_ctx, refit=self.refitter(f.method)) if task.refits else task_ctx
                with torch.inference_mode(not (task.refits or task.needs_grad)):
                    output = task.evaluate(f.dictionary, method_ctx)
                record = self.record(f, task_label, task, output, store, side, time.perf_counter() - start)
                write_result(path, record)
                records.append(record)
                progress.advance(bar)
            progress.update(detail, visible=False)
        return records, k

    @staticmethod
    def _judge_work_left(side: Side, built: list[tuple[str, Method]], task_list: list[tuple[str, Task]]) -> bool:
        """Whether a judge task still lacks a result for some method (a finished run resumes without its judge)."""
        spec = side.spec
        return any(not result_path(side.root, spec.model, spec.hook, label, task_label).exists()
                   for task_label, task in task_list if task.needs_judge
                   for label, method in built if method.refittable or not task.refits)

    def refitter(self, method: Method):
        """A fresh copy of `method` (same settings and seed) fitted on data it is given."""

        def refit(data) -> Dictionary:
            torch.manual_seed(self.cfg.seed)
            return type(method)(**asdict(method)).fit(data)

        return refit

    def matched_k(self, fitted: list[Fitted], reference: Fitted | None, store) -> int | None:
        """k for the top-k rows: --matched-k, else the reference sparse method's L0 on eval; None if nothing to match."""
        if all(f.method.sparse for f in fitted):
            return None
        if self.cfg.matched_k is not None:
            return self.cfg.matched_k
        if reference is None:
            return None
        x = store.eval.kept_activations(min(store.eval.n_kept, 8192), seed=self.cfg.seed).to(self.cfg.device)
        with torch.inference_mode():
            l0 = (reference.dictionary.to(self.cfg.device).encode(x) != 0).float().sum(-1).mean().item()
        return max(1, round(l0))

    def resume_key(self, f: Fitted, task, side: Side) -> str:
        """What must match for a result on disk to stand for this one."""
        key = {"activations": side.spec.key(), "method": asdict(f.method), "matched_k": f.matched_k,
               "task": task.name, "task_params": asdict(task), "seed": self.cfg.seed}
        if side.control is not None:  # (also in the activations' key; the trained side's key is as it always was)
            key["control"] = side.control
        if task.needs_judge:
            key["judge"] = self.cfg.judge.identity()
        return fingerprint(key)

    def record(self, f: Fitted, task_label: str, task: Task, output, store, side: Side, task_s: float) -> dict[str, Any]:
        spec = side.spec
        return {
            "resume_key": self.resume_key(f, task, side),
            "model": spec.model,
            "hook": spec.hook,
            "control": side.control,  # None: the trained model; reports.controls pairs the two sides
            "method": f.label,
            "method_name": f.method.name,
            "method_params": asdict(f.method),
            "sparse": f.method.sparse,
            "matched_k": f.matched_k,
            "fit_info": f.fit_info,
            "task": task_label,
            "task_name": task.name,
            "task_params": asdict(task),
            **({"judge": self.cfg.judge.identity()} if task.needs_judge else {}),
            "metrics": {name: m.to_json() for name, m in output.metrics.items()},
            "details": output.details,
            "exclusion": store.exclusion_record(),
            "activations": {"key": spec.key(), "corpus": spec.corpus_fingerprint, "ctx_len": spec.ctx_len,
                            "train_tokens": store.train.n_tokens, "eval_tokens": store.eval.n_tokens,
                            "model_fingerprint": spec.model_fingerprint},
            "seed": self.cfg.seed,
            "device": self.cfg.device,
            "config": asdict(self.cfg),
            "config_fingerprint": fingerprint(asdict(self.cfg)),
            **self.env,
            "timings": {"fit_seconds": f.fit_seconds, "task_seconds": task_s},
            "created": now(),
        }

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

