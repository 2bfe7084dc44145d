"""Executes one unit of `bench.units` in this process, from paths alone.

A `Workspace` is what one process keeps between units: the subject model, opened activation stores, prepared
tasks (loss_recovered's clean logits, autointerp's calibrated judge) and the judge. The local executor uses one
for the whole run; a Ray worker keeps one per process (`bench.executors.ray_worker`), so a worker that evaluates
many rows of one task prepares it once. Every unit seeds what it draws (the fit from the run seed as the local
run always did, each evaluation likewise), so the order in which units run does not change a number.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from bench.config import RunConfig
from bench.corpus import Document, load_corpus
from bench.device import check_sae_batch, harvest_batch
from bench.dictionary import CONFIG_FILE, Dictionary, TopKDictionary, load_dictionary
from bench.errors import BenchError
from bench.harvest import harvest
from bench.io import fingerprint
from bench.judge import Judge, make_judge
from bench.models import SubjectModel, load_model
from bench.profile import UnitProfile, measured
from bench.results import environment, now, read_result, write_result
from bench.seeds import seed_label
from bench.store import ActivationStore, read_manifest
from bench.units import (EvalRow, EvalUnit, FitUnit, HarvestUnit, MatchedKUnit, Side, build_methods, build_tasks,
                         cached_fit, code_versions, dictionary_checksum, dictionary_meta, resume_key,
                         stale_result)
from methods.base import Method
from methods.sae import SAEMethod
from methods.trainer import Checkpointing, train_saes
from tasks.base import Task, TaskContext

ProgressFn = Callable[[int, int], None]


@dataclass
class Fitted:
    """A dictionary ready for the tasks, with where it came from (tasks never see this)."""

    label: str
    method: Method
    dictionary: Dictionary
    fit_seconds: float
    fit_info: dict[str, Any]
    matched_k: int | None = None
    checksum: str | None = None  # the dictionary's SHA-256 as saved: a result names the exact weights it scored


@dataclass
class EvalHooks:
    """Progress of an evaluation unit: prepared, each row started and finished, the task's own steps."""

    prepared: Callable[[], None] = lambda: None
    start: Callable[[str], None] = lambda label: None
    done: Callable[[str], None] = lambda label: None
    detail: ProgressFn | None = None


class Workspace:
    """Runs units for one configuration and run directory; holds what is worth keeping between them."""

    def __init__(self, cfg: RunConfig, out: Path, judge_loader: Callable[[], Judge] | None = None,
                 docs: list[Document] | None = None, keep_prepared: int | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self._judge_loader = judge_loader
        self._judge: Judge | None = None
        self._docs = docs
        self._models: dict[str | None, SubjectModel] = {}
        self._stores: dict[str, ActivationStore] = {}
        self._prepared: OrderedDict[tuple[str | None, str, int], tuple[Task, TaskContext]] = OrderedDict()
        self._keep_prepared = keep_prepared  # None: every prepared task of the side stays (the local run)
        self._env: dict[str, Any] | None = None
        self.profiles: list[UnitProfile] = []  # every unit run here, measured, in order

    # --- what is kept between units ------------------------------------------------------------------------
    def model(self, control: str | None = None) -> SubjectModel:
        if control not in self._models:
            self.release_other(control)
            self._models[control] = load_model(self.cfg.model, self.cfg.device, control, self.cfg.seed,
                                               self.cfg.eval_dtype)
        return self._models[control]

    def judge(self) -> Judge:
        if self._judge_loader is not None:
            return self._judge_loader()
        if self._judge is None:
            self._judge = make_judge(self.cfg.judge)
        return self._judge

    def store(self, side: Side) -> ActivationStore:
        key = side.spec.key()
        if key not in self._stores:
            self._stores[key] = ActivationStore.open(side.spec.path())
        return self._stores[key]

    def env(self) -> dict[str, Any]:
        if self._env is None:
            self._env = environment()
        return self._env

    def release_other(self, control: str | None) -> None:
        """Let go of another side's model and prepared tasks: one side in memory at a time."""
        for other in [c for c in self._models if c != control]:
            del self._models[other]
        for key in [k for k in self._prepared if k[0] != control]:
            del self._prepared[key]

    def release(self, control: str | None) -> None:
        """Let go of this side's model and prepared tasks."""
        self._models.pop(control, None)
        for key in [k for k in self._prepared if k[0] == control]:
            del self._prepared[key]

    def run_unit(self, unit, **hooks: Any) -> Any:
        """Execute any unit, measured (`bench.profile`; its profile goes to `self.profiles`, failed or not). `hooks`:
        the local executor's progress callbacks (`progress` for harvest and fit, `hooks` for an evaluation)."""
        kinds = {HarvestUnit: "harvest", FitUnit: "fit", MatchedKUnit: "matched_k", EvalUnit: "evaluate"}
        before = self._forward_tokens()
        profile = None
        try:
            with measured(unit.name, kinds[type(unit)], self.cfg.device) as profile:
                if isinstance(unit, HarvestUnit):
                    value: Any = self.harvest(unit, hooks.get("progress"))
                    profile.cached = not value["harvested"]
                elif isinstance(unit, FitUnit):
                    value = self.fit(unit, hooks.get("progress"))
                    profile.cached = unit.cached
                    if not unit.cached:
                        profile.work.update(self._fit_tokens(unit))
                elif isinstance(unit, MatchedKUnit):
                    value = self.matched_k(unit)
                else:
                    value = self.evaluate(unit, hooks.get("hooks"))
        finally:
            if profile is not None:
                if (forward := self._forward_tokens() - before) > 0:
                    profile.work["forward_tokens"] = forward
                self.profiles.append(profile)
        return value

    def _forward_tokens(self) -> int:
        return sum(m.forward_tokens for m in self._models.values())

    def _fit_tokens(self, unit: FitUnit) -> dict[str, float]:
        """Training tokens a shared SAE pass went through (each SAE sees every one)."""
        methods = self.methods()
        sae = next((methods[label] for label in unit.labels if isinstance(methods[label], SAEMethod)), None)
        if sae is None:
            return {}
        return {"tokens": self.store(unit.side).train.n_kept * sae.epochs}

    def close(self) -> None:
        self._models.clear()
        self._prepared.clear()
        if self._judge is not None:
            self._judge.close()
            self._judge = None

    # --- harvest -------------------------------------------------------------------------------------------
    def harvest(self, unit: HarvestUnit, progress: ProgressFn | None = None) -> dict[str, Any]:
        side = unit.side
        manifest = read_manifest(side.spec.path())
        harvested = manifest is None or not manifest.get("complete")
        if harvested:
            docs = self._docs if self._docs is not None else load_corpus(self.cfg.text)
            model = self.model(side.control)
            batch = harvest_batch(self.cfg.harvest_batch, self.cfg.device, side.spec.ctx_len, model)
            harvest(side.spec, docs, lambda: model, batch, progress)
        store = self.store(side)
        if self.cfg.matched_k is not None and self.cfg.matched_k > store.d_model:
            # Signed pairs of a dense basis leave at most d_model codes non-zero per token.
            raise BenchError(f"--matched-k {self.cfg.matched_k} exceeds the hook's dimension {store.d_model}; "
                             f"pass a k from 1 to {store.d_model}")
        return {"key": side.spec.key(), "d_model": store.d_model, "train_tokens": store.train.n_tokens,
                "harvested": harvested}

    # --- fit -----------------------------------------------------------------------------------------------
    def methods(self) -> dict[str, Method]:
        """Fresh method objects by label (a fit records what it learned about itself on the object)."""
        return dict(build_methods(self.cfg))

    def load_fitted(self, side: Side, label: str, method: Method, store: ActivationStore,
                    refit_stale: bool = False) -> Fitted | None:
        """The dictionary the run directory holds for `label`, checked against the settings; None if absent (or,
        with `refit_stale`, made by another version of the code: the fit replaces it)."""
        directory = side.dictionary_dir(label)
        if not (directory / CONFIG_FILE).exists():
            return None
        if stale := cached_fit(side, label, method):
            if refit_stale:
                return None
            raise BenchError(f"{directory} was {stale}; rerun the same command to refit it")
        dictionary = load_dictionary(directory, self.cfg.device)
        if dictionary.d_in != store.d_model:
            raise BenchError(f"dictionary {directory} has dimension {dictionary.d_in} but the hook gives "
                             f"{store.d_model}; use another --out or delete that directory")
        meta = dictionary_meta(directory)
        return Fitted(label, method, dictionary, meta.get("fit_seconds", 0.0), meta.get("fit_info", {}),
                      checksum=meta.get("sha256"))

    def fit(self, unit: FitUnit, progress: ProgressFn | None = None) -> dict[str, float]:
        """Fit the unit's methods that have no dictionary yet (SAEs in one shared pass) and save them; check the
        others. Returns each label's fit seconds (a shared pass: each SAE's share)."""
        side, store, methods = unit.side, self.store(unit.side), self.methods()
        members = []
        seconds: dict[str, float] = {}
        for label in unit.labels:
            cached = self.load_fitted(side, label, methods[label], store, refit_stale=True)
            if cached is None:
                members.append((label, methods[label]))
            else:
                seconds[label] = cached.fit_seconds
        if not members:
            return seconds
        labels = [label for label, _ in members]
        torch.manual_seed(self.cfg.seed)
        start = time.perf_counter()
        if isinstance(members[0][1], SAEMethod):
            check_sae_batch([m for _, m in members], store.d_model)
            ckpt = Checkpointing(side.root / "checkpoints" / fingerprint(labels))
            # One pass for the SAEs of every seed: the batches follow the run's base seed, each SAE its own init.
            dictionaries = train_saes([m for _, m in members], store.train, progress, ckpt, data_seed=self.cfg.seed)
        else:
            dictionaries = [members[0][1].fit(store.train, progress)]
        share = (time.perf_counter() - start) / len(members)
        for (label, method), dictionary in zip(members, dictionaries, strict=True):
            dictionary.save(side.dictionary_dir(label), {
                "method": label, "params": asdict(method), "fit_seconds": share, "fit_info": method.fit_info_,
                "timing": method.timing_,
                "activations": store.manifest["key"], "hook": store.hook, "model": store.manifest["spec"]["model"],
                "control": side.control, "code_versions": code_versions(method)})
            seconds[label] = share
        return seconds

    # --- matched k -----------------------------------------------------------------------------------------
    def matched_k(self, unit: MatchedKUnit) -> int:
        """The reference sparse method's L0 on (up to 8,192 tokens of) the eval split, rounded, at least 1."""
        side, store = unit.side, self.store(unit.side)
        reference = self.load_fitted(side, unit.reference, self.methods()[unit.reference], store)
        if reference is None:
            raise BenchError(f"{side.dictionary_dir(unit.reference)}: no dictionary to match k on; rerun the fit")
        x = store.eval.kept_activations(min(store.eval.n_kept, 8192), seed=self.cfg.seed).to(self.cfg.device)
        with torch.inference_mode():
            l0 = (reference.dictionary.to(self.cfg.device).encode(x) != 0).float().sum(-1).mean().item()
        return max(1, round(l0))

    # --- evaluate ------------------------------------------------------------------------------------------
    def prepared_task(self, side: Side, task_label: str, detail: ProgressFn | None = None,
                      seed: int | None = None) -> tuple[Task, TaskContext]:
        """The task prepared on this side's store and model with `seed`'s eval sample (None: the base seed), once
        per process (a fresh object per side and seed)."""
        seed = self.cfg.seed if seed is None else seed
        key = (side.control, task_label, seed)
        if key not in self._prepared:
            self.release_other(side.control)
            task = dict(build_tasks(self.cfg))[task_label]
            ctx = TaskContext(store=self.store(side), hook=side.spec.hook, model_loader=lambda: self.model(side.control),
                              seed=seed, device=self.cfg.device, judge_loader=self.judge, progress=detail)
            task.prepare(ctx)
            self._prepared[key] = (task, ctx)
            while self._keep_prepared is not None and len(self._prepared) > self._keep_prepared:
                self._prepared.popitem(last=False)
        self._prepared.move_to_end(key)
        return self._prepared[key]

    def fitted_row(self, side: Side, row: EvalRow, method: Method, store: ActivationStore) -> Fitted:
        f = self.load_fitted(side, row.base, method, store)
        if f is None:
            raise BenchError(f"{side.dictionary_dir(row.base)}: no fitted dictionary; rerun to fit it")
        if row.topk:
            return replace(f, label=row.label, dictionary=TopKDictionary.wrap(f.dictionary, row.matched_k),
                           matched_k=row.matched_k)
        return replace(f, matched_k=row.matched_k)

    def evaluate(self, unit: EvalUnit, hooks: EvalHooks | None = None) -> list[dict[str, Any]]:
        """Score each row's dictionary on the task and write its result; a row whose result is already there
        (a retried unit) is read back, not rewritten. Rows whose output is incomplete are not written: the unit
        then raises, naming them, once its other rows are."""
        hooks = hooks or EvalHooks()
        side, store, methods = unit.side, self.store(unit.side), self.methods()
        records: list[dict[str, Any]] = []
        not_stored: list[str] = []
        for row in unit.rows:
            task, task_ctx = self.prepared_task(side, unit.task, hooks.detail, row.seed)
            hooks.prepared()
            method = methods[row.base]
            path = side.result_path(row.label, unit.task)
            key = resume_key(self.cfg, side, method, row.matched_k, task, row.seed)
            existing = read_result(path)
            if existing is not None and existing.get("resume_key") == key \
                    and not stale_result(existing, code_versions(method, task), dictionary_checksum(side.dictionary_dir(row.base))):
                records.append(existing)
                hooks.done(row.label)
                continue
            f = self.fitted_row(side, row, method, store)
            hooks.start(row.label)
            start = time.perf_counter()
            method_ctx = replace(task_ctx, refit=self.refitter(method)) if task.refits else task_ctx
            if task.cross_seed:
                method_ctx = replace(method_ctx, siblings=lambda base=row.base: self.siblings(side, base, store))
            torch.manual_seed(task_ctx.seed)  # tasks draw from their own seeded generators; this guards any other
            with torch.inference_mode(not (task.refits or task.needs_grad)):
                output = task.evaluate(f.dictionary, method_ctx)
            if output.incomplete:  # not a finished result: never written, so a rerun retries it
                not_stored.append(f"{side.tag}{unit.task} · {row.label}: {output.incomplete}")
                hooks.done(row.label)
                continue
            record = self.record(f, unit.task, task, output, store, side, time.perf_counter() - start, key,
                                 task_ctx.seed, row.label)
            write_result(path, record)
            records.append(record)
            hooks.done(row.label)
        if not_stored:  # after the unit's other rows are written; the unit fails, as any unit that raises
            raise BenchError("; ".join(not_stored) + "; not stored, rerun to retry")
        return records

    def siblings(self, side: Side, label: str, store: ActivationStore) -> list[Dictionary]:
        """The dictionaries of `label`'s method fitted with the run's other seeds."""
        methods = self.methods()
        out = []
        for seed in self.cfg.extra_seeds:
            other = seed_label(label, seed)
            f = self.load_fitted(side, other, methods[other], store)
            if f is None:
                raise BenchError(f"{side.dictionary_dir(other)}: no fitted dictionary for seed {seed}; rerun to fit it")
            out.append(f.dictionary)
        return out

    def refitter(self, method: Method):
        """A fresh copy of `method` (same settings and seed) fitted on data it is given."""

        def refit(data) -> Dictionary:
            torch.manual_seed(method.seed)
            return type(method)(**asdict(method)).fit(data)

        return refit

    def record(self, f: Fitted, task_label: str, task: Task, output, store: ActivationStore, side: Side,
               task_s: float, key: str, seed: int | None = None, label: str | None = None) -> dict[str, Any]:
        spec, cfg = side.spec, self.cfg
        recorded = cfg.recorded()  # credentials in the judge's URL redacted
        return {
            "resume_key": key,
            "model": spec.model,
            "hook": spec.hook,
            "control": side.control,  # None: the trained model; reports.controls pairs the two sides
            "method": label or f.label,
            "method_name": f.method.name,
            "method_params": asdict(f.method),
            "sparse": f.method.sparse,
            "matched_k": f.matched_k,
            "fit_info": f.fit_info,
            "dictionary_sha256": f.checksum,
            "code_versions": code_versions(f.method, task),
            "task": task_label,
            "task_name": task.name,
            "task_params": asdict(task),
            **({"judge": cfg.judge.identity()} if task.needs_judge else {}),
            "metrics": {name: m.to_json() for name, m in output.metrics.items()},
            "details": output.details,
            "exclusion": store.exclusion_record(),
            "activations": {"key": spec.key(), "corpus": spec.corpus_fingerprint, "ctx_len": spec.ctx_len,
                            "train_tokens": store.train.n_tokens, "eval_tokens": store.eval.n_tokens,
                            "model_fingerprint": spec.model_fingerprint},
            "seed": cfg.seed if seed is None else seed,  # the evaluation's (and, for a seeded method, the fit's)
            "device": cfg.device,
            "config": recorded,
            "config_fingerprint": fingerprint(recorded),
            **self.env(),
            "timings": {"fit_seconds": f.fit_seconds, "task_seconds": task_s},
            "created": now(),
        }
