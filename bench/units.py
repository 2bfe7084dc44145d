"""The run as units of work, and the plan that orders them.

    harvest (model, hook) ──▶ fit (methods sharing a pass over one store) ──▶ matched k ──▶ evaluate (rows × task)

A unit names what it reads and writes; artifacts travel by path, so a unit needs nothing but the run
configuration, the cache directory and the run directory:

- `HarvestUnit` writes the activation store `<cache>/activations/<model>/<hook>/<key>/`.
- `FitUnit` reads the store and writes `<side root>/dictionaries/<label>/` for each of its methods (SAEs that can
  share a pass over the data train together: one unit).
- `MatchedKUnit` reads the first sparse method's dictionary and the eval split; it returns k, the L0 that the
  dense methods' top-k rows match. A control uses the trained side's k: its evaluations wait on that unit.
- `EvalUnit` reads dictionaries and the store and writes `<side root>/results/*.json`, one per row. One unit
  per (row, task); a task with the LLM judge takes all its rows in one unit, so the judge loads once.

The evaluations are planned once k is known (their labels, `pca@top35`, and resume keys depend on it).
Executors (`bench.executors`) run the units; `bench.worker` executes one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import methods as method_registry
import tasks as task_registry
from bench.config import RunConfig
from bench.dictionary import CONFIG_FILE
from bench import stats
from bench.errors import BenchError
from bench.harvest import HarvestSpec
from bench.io import fingerprint
from bench.results import read_result, result_path
from bench.seeds import seed_label, split_seed
from bench.specs import canonical_label, expand_spec, method_matches, parse_spec
from methods.base import Method
from methods.sae import SAEMethod
from methods.trainer import VERSION as TRAINER_VERSION
from methods.trainer import group_key
from tasks.base import Task


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

    @property
    def tag(self) -> str:
        """The prefix as plain text (failure reports)."""
        return "" if self.control is None else f"[{self.control}] "

    def dictionary_dir(self, label: str) -> Path:
        return self.root / "dictionaries" / label.replace("/", "_")

    def result_path(self, label: str, task_label: str) -> Path:
        return result_path(self.root, self.spec.model, self.spec.hook, label, task_label)


@dataclass(frozen=True)
class HarvestUnit:
    side: Side

    @property
    def name(self) -> str:
        return f"{self.side.tag}harvest {self.side.spec.hook}"


@dataclass(frozen=True)
class FitUnit:
    side: Side
    labels: tuple[str, ...]
    cached: bool = False  # every label had a dictionary in the run directory when planned: only checked

    @property
    def name(self) -> str:
        return f"{self.side.tag}fit {', '.join(self.labels)}"


@dataclass(frozen=True)
class MatchedKUnit:
    side: Side
    reference: str  # the sparse method whose L0 on the eval split sets k

    @property
    def name(self) -> str:
        return f"{self.side.tag}matched k ({self.reference})"


@dataclass(frozen=True)
class EvalRow:
    """One scored dictionary: a fitted method (`base`, its dictionary's label), or a dense one cut to its top-k
    codes (`topk`), evaluated with the run's base seed (`seed` None) or another of `--seeds` (the label then ends
    in `~s<seed>`; an unseeded method's one dictionary is evaluated on each seed's eval sample)."""

    base: str
    matched_k: int | None = None
    topk: bool = False
    seed: int | None = None

    @property
    def label(self) -> str:
        core = split_seed(self.base)[0]
        return seed_label(f"{core}@top{self.matched_k}" if self.topk else core, self.seed)


@dataclass(frozen=True)
class EvalUnit:
    side: Side
    task: str  # the task's label
    rows: tuple[EvalRow, ...]

    @property
    def name(self) -> str:
        return f"{self.side.tag}{self.task} · {', '.join(r.label for r in self.rows)}"


Unit = HarvestUnit | FitUnit | MatchedKUnit | EvalUnit


# --- methods and tasks from the configuration --------------------------------------------------------------
def expand_names(requested: tuple[str, ...], registry: dict[str, Any]) -> list[str]:
    """("all",) -> every registered name (but those that need an argument, `in_all = False`); comma-separated items
    are split; order kept, duplicates dropped."""
    from bench.specs import split_specs

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
    from fnmatch import fnmatch

    merged: dict[str, Any] = {}
    for pattern, params in presets.items():
        if pattern != name and fnmatch(name, pattern):
            merged.update(params)
    merged.update(presets.get(name, {}))
    return merged


def _configure(requested: tuple[str, ...], registry: dict[str, Any], presets: dict[str, dict[str, Any]],
               build, exclude: frozenset[str] = frozenset()) -> list[tuple[str, Any]]:
    """(label, object) per requested spec, sweeps expanded; labels name the settings that differ from the preset."""
    built = []
    specs = [s for item in expand_names(requested, registry) for s in expand_spec(item)]
    for spec in dict.fromkeys(specs):
        defaults = preset_params(presets, parse_spec(spec)[0])
        obj = build(spec, defaults)
        built.append((canonical_label(obj, defaults, exclude), obj))
    return built


def build_methods(cfg: RunConfig) -> list[tuple[str, Method]]:
    """(label, method) per requested spec at the base seed, then each seeded method again per extra seed
    (`sae-relu~s1`)."""
    def at(seed: int):
        return _configure(cfg.methods, method_registry.REGISTRY, cfg.method_params,
                          lambda s, d: method_registry.build_method(s, d, seed, cfg.device), frozenset({"seed", "device"}))

    built = at(cfg.seed)
    for seed in cfg.extra_seeds:
        built += [(seed_label(label, seed), m) for label, m in at(seed) if m.seeded]
    return built


def build_tasks(cfg: RunConfig) -> list[tuple[str, Task]]:
    return _configure(cfg.tasks, task_registry.REGISTRY, cfg.task_params, task_registry.build_task)


def explicit_methods(cfg: RunConfig) -> set[str]:
    """Method names the configuration names itself, not through `all`."""
    from bench.specs import split_specs

    return {parse_spec(spec)[0] for item in cfg.methods for spec in split_specs(item) if spec != "all"}


def runs_on(cfg: RunConfig, task_name: str, label: str) -> bool:
    """Whether task `task_name` evaluates method `label` (a dictionary's label): every method, unless
    `cfg.task_methods` narrows the task (the default preset's autointerp); a method named in `methods` always is."""
    patterns = cfg.task_methods.get(task_name, ("all",))
    return "all" in patterns or method_matches(label, (*patterns, *explicit_methods(cfg)))


def side_work(side: Side, built: list[tuple[str, Method]], task_list: list[tuple[str, Task]]):
    """The methods and tasks a side runs: a control leaves out what it cannot change, methods that are not
    fitted on the activations (a released SAE) and tasks that never read the model (toy_superposition)."""
    if side.control is None:
        return built, task_list
    return ([(label, m) for label, m in built if m.refittable],
            [(label, t) for label, t in task_list if t.depends_on_model])


def code_versions(method: Method, task: Task | None = None) -> dict[str, int]:
    """The versions of the code behind a dictionary (method, and trainer for an SAE) or a result (and task).
    Bumped with a change of formula or trainer; a resumed run refits or recomputes what an older version made."""
    versions = {"method": type(method).version}
    if isinstance(method, SAEMethod):
        versions["trainer"] = TRAINER_VERSION
    if task is not None:
        versions["task"] = type(task).version
        versions["stats"] = stats.VERSION  # every metric's interval
    return versions


def stale_versions(recorded: dict[str, Any] | None, current: dict[str, int]) -> str | None:
    """Why a dictionary or result made by `recorded` versions is out of date (None: it is current)."""
    if recorded is None:
        return "made before code versions were recorded"
    changed = [f"{name} version {recorded.get(name, '?')} → {v}" for name, v in current.items() if recorded.get(name) != v]
    return ", ".join(changed) or None


def stale_result(record: dict[str, Any], versions: dict[str, int], checksum: str | None) -> str | None:
    """Why a finished result with the right settings must still be recomputed: it was made by other code, or
    from other weights than the dictionary saved now (refitted since). None: it stands."""
    if stale := stale_versions(record.get("code_versions"), versions):
        return f"made by other code ({stale})"
    if checksum is not None and record.get("dictionary_sha256") != checksum:
        return "computed from another fit of its dictionary"
    return None


def dictionary_meta(directory: Path) -> dict[str, Any]:
    """What `Workspace.fit` recorded with a saved dictionary (`meta`), plus its `sha256`."""
    spec = json.loads((directory / CONFIG_FILE).read_text())
    return {**spec.get("meta", {}), "sha256": spec.get("sha256")}


def dictionary_checksum(directory: Path) -> str | None:
    """The SHA-256 recorded with a saved dictionary (None: none saved, e.g. its fit failed)."""
    try:
        return dictionary_meta(directory).get("sha256")
    except (OSError, ValueError):
        return None


def resume_key(cfg: RunConfig, side: Side, method: Method, matched_k: int | None, task: Task,
               seed: int | None = None) -> str:
    """What must match for a result on disk to stand for this one (`seed`: the evaluation's, None = the base)."""
    key = {"activations": side.spec.key(), "method": asdict(method), "matched_k": matched_k,
           "task": task.name, "task_params": asdict(task), "seed": cfg.seed if seed is None else seed}
    if side.control is not None:  # (also in the activations' key; the trained side's key is as it always was)
        key["control"] = side.control
    if cfg.eval_dtype != "float32":  # (float32's key is as it always was)
        key["eval_dtype"] = cfg.eval_dtype
    if task.needs_judge:
        key["judge"] = cfg.judge.identity()
    if task.cross_seed:
        key["seeds"] = list(cfg.all_seeds)
    return fingerprint(key)


# --- the plan ------------------------------------------------------------------------------------------------
@dataclass
class SidePlan:
    """One side's harvest and fits, and how its k is found: measured by `k_unit`, fixed (`k`), or taken from the
    trained side (`k_from_trained`)."""

    side: Side
    methods: list[tuple[str, Method]]
    tasks: list[tuple[str, Task]]
    harvest: HarvestUnit
    fits: list[FitUnit]
    reference: str | None  # the first sparse method in --methods order (registry order for `all`)
    k: int | None = None
    k_unit: MatchedKUnit | None = None
    k_from_trained: bool = False
    notes: list[str] = field(default_factory=list)  # what is refitted and why, said before the run starts

    def fit_of(self, label: str) -> FitUnit:
        return next(u for u in self.fits if label in u.labels)


def plan_side(cfg: RunConfig, side: Side, built: list[tuple[str, Method]], task_list: list[tuple[str, Task]]) -> SidePlan:
    """Harvest, fit units (SAEs sharing `group_key` together; a dictionary already in the run directory gets a unit
    of its own that only checks it) and the matched-k step of one side."""
    fits: list[FitUnit] = []
    groups: dict[tuple, list[str]] = {}
    notes: list[str] = []
    for label, method in built:
        saved = (side.dictionary_dir(label) / CONFIG_FILE).exists()
        if saved and not (stale := cached_fit(side, label, method)):
            fits.append(FitUnit(side, (label,), cached=True))
        else:
            if saved:
                notes.append(f"{side.tag}refitting {label}: its dictionary was {stale}")
            key = group_key(method) if isinstance(method, SAEMethod) else ("alone", label)
            groups.setdefault(key, []).append(label)
    fits.extend(FitUnit(side, tuple(labels)) for labels in groups.values())
    bases = [label for label, _ in built if split_seed(label)[1] is None]
    for _, task in task_list:
        if left := [label for label in bases if not runs_on(cfg, task.name, label)]:
            kept = [label for label in bases if label not in left]
            notes.append(f"{side.tag}{task.name} evaluates {', '.join(kept) or 'no method'}; it leaves out "
                         f"{', '.join(left)} (--task-methods {task.name}=all evaluates every method)")
    reference = next((label for label, m in built if m.sparse), None)
    plan = SidePlan(side, built, task_list, HarvestUnit(side), fits, reference, notes=notes)
    if side.control is not None:
        plan.k_from_trained = True  # each top-k row compares the same sparsity on both sides
    elif all(m.sparse for _, m in built):
        plan.k = None
    elif cfg.matched_k is not None:
        plan.k = cfg.matched_k
    elif reference is not None:
        plan.k_unit = MatchedKUnit(side, reference)
    return plan


def cached_fit(side: Side, label: str, method: Method) -> str | None:
    """Check a dictionary the run directory already holds for `label` before anything runs: other settings or
    activations are refused (one line); code of another version is returned as the reason to refit (None:
    current, reused)."""
    directory = side.dictionary_dir(label)
    try:
        meta = dictionary_meta(directory)
    except (OSError, ValueError):
        raise BenchError(f"{directory}/{CONFIG_FILE} is unreadable; delete {directory} and rerun to refit it") from None
    if meta.get("params") != json.loads(json.dumps(asdict(method), default=str)) \
            or meta.get("activations") != side.spec.key():
        raise BenchError(f"{directory} was fitted with other settings or activations; "
                         "use a new --out (finished results there are kept)")
    if stale := stale_versions(meta.get("code_versions"), code_versions(method)):
        return f"made by other code ({stale})"
    return None


class KUnknown:
    """k could not be measured (its unit failed): rows that depend on it are left out."""


@dataclass
class EvalPlan:
    """A side's evaluations: records already on disk (by task) and the units still to run, in task order."""

    done: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    units: list[EvalUnit] = field(default_factory=list)
    left_out: int = 0  # rows that need a k that could not be measured
    notes: list[str] = field(default_factory=list)  # finished results recomputed, and why

    def ordered(self, results: dict[EvalUnit, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Records per task: those found on disk, then the new ones in row order."""
        out: list[dict[str, Any]] = []
        for task_label, done in self.done.items():
            out.extend(done)
            for unit in self.units:
                if unit.task == task_label:
                    out.extend(results.get(unit, []))
        return out


def plan_evals(cfg: RunConfig, plan: SidePlan, k: int | None | type[KUnknown]) -> EvalPlan:
    """Rows (each method; the reference stands at k; dense methods again at top-k) × tasks, minus results already
    on disk. A result from other settings is refused rather than mixed or overwritten."""
    side, by_label = plan.side, dict(plan.methods)
    unknown = k is KUnknown
    checksums = {label: dictionary_checksum(side.dictionary_dir(label)) for label, _ in plan.methods}

    out = EvalPlan()
    base_methods = [(label, m) for label, m in plan.methods if split_seed(label)[1] is None]
    rows_at: dict[int | None, list[EvalRow]] = {}
    for seed in (None, *cfg.extra_seeds):
        # The dictionary a row reads: the seed's own fit for a seeded method, else the one fit.
        fitted = {label: seed_label(label, seed) if seed is not None and m.seeded else label for label, m in base_methods}
        rows: list[EvalRow] = []
        for label, _ in base_methods:
            if label == plan.reference and k is not None:
                if unknown:
                    continue
                rows.append(EvalRow(fitted[label], k, seed=seed))
            else:
                rows.append(EvalRow(fitted[label], seed=seed))
        if k is not None and not unknown:
            rows.extend(EvalRow(fitted[label], k, True, seed)
                        for label, m in base_methods if label != plan.reference and not m.sparse)
        rows_at[seed] = rows
    for task_label, task in plan.tasks:
        out.done[task_label] = []
        todo: list[EvalRow] = []
        if unknown:  # the reference's row and the dense methods' top-k rows wait for a rerun
            out.left_out += (plan.reference is not None) + task.topk_rows * sum(not m.sparse for _, m in base_methods)
        if task.cross_seed:  # stability: each seeded method once, against its other seeds' dictionaries
            task_rows = [r for r in rows_at[None] if by_label[r.base].seeded] if cfg.extra_seeds else []
        else:
            task_rows = [r for rows in rows_at.values() for r in rows]
        task_rows = [r for r in task_rows if runs_on(cfg, task.name, r.base)]
        for row in task_rows:
            method = by_label[row.base]
            if row.topk and not task.topk_rows:
                continue
            if task.refits and not method.refittable:
                continue
            path = side.result_path(row.label, task_label)
            existing = read_result(path)
            if existing is None:
                todo.append(row)
            elif task.cross_seed and existing.get("resume_key") != resume_key(cfg, side, method, row.matched_k, task,
                                                                               row.seed):
                todo.append(row)  # other seeds than last time: recomputed from the dictionaries, which are kept
            elif existing.get("resume_key") != resume_key(cfg, side, method, row.matched_k, task, row.seed):
                raise BenchError(f"{path} holds a result from other settings; use a new --out "
                                 "(finished results there are kept)")
            elif stale := stale_result(existing, code_versions(method, task), checksums.get(row.base)):
                out.notes.append(f"{side.tag}recomputing {task_label} · {row.label}: the stored result was {stale}")
                todo.append(row)
            else:
                out.done[task_label].append(existing)
        if todo and task.needs_judge:  # one judge per unit: loaded once for all rows
            out.units.append(EvalUnit(side, task_label, tuple(todo)))
        else:
            out.units.extend(EvalUnit(side, task_label, (row,)) for row in todo)
    return out


def judge_work_left(cfg: RunConfig, plan: SidePlan) -> bool:
    """Whether a judge task still lacks a result for some method it evaluates, at some seed (a finished run resumes
    without its judge)."""
    return any(not plan.side.result_path(seed_label(label, seed), task_label).exists()
               for task_label, task in plan.tasks if task.needs_judge
               for label, method in plan.methods if (method.refittable or not task.refits)
               and split_seed(label)[1] is None and runs_on(cfg, task.name, label) for seed in (None, *cfg.extra_seeds))


@dataclass(frozen=True)
class Grid:
    """Everything an executor needs: the configuration, the run directory, the sides' plans, and the torch thread
    count every unit runs with (results are bit-reproducible for a fixed seed and thread count)."""

    cfg: RunConfig
    out: Path
    plans: tuple[SidePlan, ...]
    threads: int
