"""Leaderboards: one table per (model, hook), methods as rows, task metrics as columns.

Rows are grouped by how many codes each token keeps: `all` (each method as fitted) and `top-k` (dense methods
restricted to each token's k largest codes, k the SAE's L0, beside the SAEs), so methods are compared at matched
sparsity as well as in full.

Each cell is a value with its 95% interval and its rank group. Methods are scored on the same units (documents,
prompts), so they are compared paired: within a codes group, every method is tested against the column's best
(paired bootstrap over the shared units; with several seeds, a paired t-test over seeds), Holm-corrected; the
methods not significantly worse than the best form group 1, and so on (`bench.stats.rank_groups`). Only group 1 is
marked. Full-width dense bases reconstruct exactly by construction, so they are not ranked on fidelity columns.
Groups are computed for the primary columns (`PRIMARY`, what the terminal shows) and the summary's headlines.
With several seeds a cell is the mean over seeds, its interval a t-interval over seeds.

Supervised references (a task's `details["references"]`: DiffMean, LEACE, the dense probe) are figures that read
the labels and not the dictionary, so they are the same for every method: each is one extra row per codes group,
`<name> (<kind>)`, its figures placed in the method columns it is a bar for, ranked with the methods by the same
paired tests (it is scored on the same units) and marked as a reference (`Row.reference`; JSON `reference`). Its
own metrics are not repeated as columns of every method. It is never counted as a method.

A board with autointerp columns also says how each method compares with `neurons` and `random` on each scorer
(unpaired: each method scores its own features) and how large a difference the board could detect
(`Leaderboard.autointerp`, `reports.autointerp_power`; JSON `autointerp`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.seeds import split_seed
from bench.specs import method_matches
from bench.stats import Evidence, IntervalInfo, compare_p, rank_groups, seed_p, t_interval

if TYPE_CHECKING:
    from reports.autointerp_power import AutointerpVerdict

# Shown in the terminal, with short headers; Markdown and JSON carry every metric.
PRIMARY = {
    ("reconstruction", "fvu"): "FVU",
    ("reconstruction", "l0"): "L0",
    ("reconstruction", "dead_fraction"): "dead",
    ("loss_recovered", "loss_recovered"): "loss rec.",
    ("loss_recovered", "loss_recovered_mean"): "loss rec. (mean abl.)",
    ("loss_recovered", "kl"): "KL",
    ("loss_recovered", "kl_share"): "KL share",  # scale-free: what a control table compares
    ("toy_superposition", "mmcs"): "toy MMCS",
    ("toy_superposition", "recovered_fraction"): "toy recovered",
    ("sparse_probing", "auroc_k1"): "best feature",
    ("sparse_probing", "auroc_k5"): "probe k=5",
    ("autointerp", "simulation"): "autointerp sim.",
    ("autointerp", "detection_auroc"): "autointerp detect",
    ("autointerp", "fuzzing_auroc"): "autointerp fuzz",
    ("ioi_patching", "k50"): "IOI k50",
    ("ioi_patching", "kl_auc"): "IOI KL AUC",
    ("concept_erasure", "behaviour_erasure"): "erase behaviour",
    ("concept_erasure", "erasure"): "erase probe",
    ("concept_erasure", "damage_kl"): "erase damage KL",
    ("stability", "pw_mcc"): "stability PW-MCC",
    ("stability", "mean_max_cos"): "stability max cos",
    ("absorption", "absorption"): "absorption",
    ("absorption", "probe_accuracy"): "letter probe acc.",
    ("disentanglement", "score"): "RAVEL score",
    ("disentanglement", "cause"): "RAVEL cause",
    ("disentanglement", "isolation"): "RAVEL isolation",
}

# A run with --eval-dtype other than float32: its model-pass figures carry that precision's noise.
EVAL_DTYPE_NOTE = ("evaluation passes in {dtype} (--eval-dtype): every KL carries a noise floor near 6e-4 nats per "
                   "token; the harvest and the fitted dictionaries are float32")


# One headline metric per task: the compact summary table a reader publishes.
HEADLINE = {
    ("reconstruction", "fvu"): "FVU",
    ("loss_recovered", "loss_recovered"): "loss recovered",
    ("sparse_probing", "auroc_k5"): "probe AUROC k=5",
    ("autointerp", "detection_auroc"): "autointerp detection",
    ("ioi_patching", "kl_auc"): "IOI KL AUC",
    ("concept_erasure", "behaviour_erasure"): "erasure of the answer",
    ("toy_superposition", "mmcs"): "toy MMCS",
    ("stability", "pw_mcc"): "seed stability (PW-MCC)",
    ("absorption", "absorption"): "absorption (first letter)",
    ("disentanglement", "score"): "disentanglement (RAVEL)",
}
# Columns on which a full-width dense basis is exact by construction (FVU 0, loss recovered 1): not ranked there.
FIDELITY_TASKS = ("reconstruction", "loss_recovered")
FIDELITY_EXEMPT = {"l0", "dead_fraction"}
CIRCLED = "①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮⑯⑰⑱⑲⑳"


@dataclass(frozen=True)
class Column:
    task: str
    metric: str
    higher_is_better: bool

    @property
    def label(self) -> str:
        return f"{self.metric} {'↑' if self.higher_is_better else '↓'}"

    @property
    def key(self) -> str:
        return f"{self.task}.{self.metric}"

    @property
    def ranked(self) -> bool:
        """Whether rank groups are computed for this column (the primary and headline columns)."""
        return (_base(self.task), self.metric) in PRIMARY or (_base(self.task), self.metric) in HEADLINE

    @property
    def fidelity(self) -> bool:
        return _base(self.task) in FIDELITY_TASKS and self.metric not in FIDELITY_EXEMPT


@dataclass
class Cell:
    """One (row, column): per seed its value and evidence; the value shown, its interval and how it was drawn."""

    seeds: dict[int, float] = field(default_factory=dict)
    evidence: dict[int, Evidence] = field(default_factory=dict)
    interval_info: dict[int, dict[str, Any]] = field(default_factory=dict)
    intervals: dict[int, tuple[float, float]] = field(default_factory=dict)
    # per seed, the record's `details.variance[metric]` where it has one (autointerp: between- and within-feature
    # variance of a per-feature score, and the samples per feature), read by `reports.autointerp_power`
    variance: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def multi_seed(self) -> bool:
        return len(self.seeds) > 1

    @property
    def value(self) -> float:
        finite = [v for v in self.seeds.values() if not math.isnan(v)]
        return float(np.mean(finite)) if finite else math.nan

    @property
    def spread(self) -> float | None:
        """Standard deviation over seeds (None with one seed)."""
        vals = [v for v in self.seeds.values() if not math.isnan(v)]
        return float(np.std(vals, ddof=1)) if len(vals) > 1 else None

    @cached_property
    def _over_seeds(self) -> IntervalInfo | None:
        """With several seeds: the t-interval over them (or why there is none)."""
        return t_interval(list(self.seeds.values())) if self.multi_seed else None

    @property
    def info(self) -> dict[str, Any] | None:
        """How the interval was drawn (unit, n, sources, method), or why there is none."""
        if self._over_seeds is not None:
            return self._over_seeds.to_json()
        return next(iter(self.interval_info.values()), None)

    @property
    def interval(self) -> tuple[float, float] | None:
        if self._over_seeds is not None:
            return self._over_seeds.interval
        return next(iter(self.intervals.values()), None)


@dataclass
class Row:
    method: str
    group: str  # "all" or "top-k"
    cells: dict[Column, Cell] = field(default_factory=dict)
    dense_full: bool = False  # a dense basis at full width: exact reconstruction by construction
    reference: str | None = None  # a supervised reference's kind (not a method): the same for every method

    @property
    def values(self) -> dict[Column, float]:
        return {c: cell.value for c, cell in self.cells.items()}

    @property
    def intervals(self) -> dict[Column, tuple[float, float]]:
        return {c: cell.interval for c, cell in self.cells.items() if cell.interval is not None}

    def excluded(self, col: Column) -> str | None:
        """Why this row is not ranked on `col`, if it is not."""
        if self.dense_full and col.fidelity:
            return "full-width dense basis: exact reconstruction by construction"
        return None


def column_groups(rows: list[Row], col: Column, cache: dict | None = None) -> dict[str, int]:
    """Rank groups of `col` over `rows` (method label -> group; rows without evidence, or excluded, get none).
    `cache` keeps p-values by the pair of cells compared (the summary repeats the wide table's comparisons)."""
    cells = {r.method: r.cells[col] for r in rows if col in r.cells and not r.excluded(col)
             and not math.isnan(r.cells[col].value)}
    multi = [c for c in cells.values() if c.multi_seed]
    if multi:  # seeds are the units: every candidate needs the same seeds
        seeds = set.intersection(*(set(c.seeds) for c in cells.values()))
        cells = {m: c for m, c in cells.items() if c.multi_seed and len(seeds) > 1}

        def p(a: str, b: str) -> float:
            return seed_p([cells[a].seeds[s] for s in sorted(seeds)], [cells[b].seeds[s] for s in sorted(seeds)])
    else:
        cells = {m: c for m, c in cells.items() if c.evidence}

        def p(a: str, b: str) -> float:
            return compare_p(next(iter(cells[a].evidence.values())), next(iter(cells[b].evidence.values())))

    if len(cells) < 2:
        return {}
    cache = {} if cache is None else cache

    def cached(a: str, b: str) -> float:
        key = (id(cells[a]), id(cells[b]), len(cells[a].seeds))
        if key not in cache:
            cache[key] = p(a, b)
        return cache[key]

    return rank_groups({m: c.value for m, c in cells.items()}, col.higher_is_better, cached)


@dataclass
class Leaderboard:
    model: str
    hook: str
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    @cached_property
    def _groups(self) -> dict[tuple[str, Column], dict[str, int]]:
        out = {}
        for group in dict.fromkeys(r.group for r in self.rows):
            members = [r for r in self.rows if r.group == group]
            for col in self.columns:
                if col.ranked:
                    out[(group, col)] = column_groups(members, col, self._p_cache)
        return out

    @cached_property
    def _p_cache(self) -> dict:
        return {}

    def rank(self, row: Row, col: Column) -> int | None:
        """The row's rank group in `col` within its codes group (1 = not significantly worse than the best)."""
        return self._groups.get((row.group, col), {}).get(row.method)

    def best(self, row: Row, col: Column) -> bool:
        """In the top group (the only one marked)."""
        return self.rank(row, col) == 1

    @property
    def seeds(self) -> list[int]:
        return sorted({s for r in self.rows for c in r.cells.values() for s in c.seeds})

    @cached_property
    def summary(self) -> "Summary":
        return build_summary(self)

    @cached_property
    def autointerp(self) -> "AutointerpVerdict | None":
        """Each method's autointerp scores against neurons and random, with the power to see a gap (None without
        autointerp columns): `reports.autointerp_power`."""
        from reports.autointerp_power import build

        return build(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hook": self.hook,
            "notes": self.notes,
            "seeds": self.seeds,
            "columns": [{"task": c.task, "metric": c.metric, "higher_is_better": c.higher_is_better,
                         "ranked": c.ranked} for c in self.columns],
            "summary": self.summary.to_json(),
            "rows": [
                {"method": r.method, "group": r.group, **({"reference": r.reference} if r.reference else {}),
                 "metrics": {c.key: _number(r.values.get(c)) for c in self.columns},
                 "best": [c.key for c in self.columns if self.best(r, c)],
                 "groups": {c.key: g for c in self.columns if (g := self.rank(r, c)) is not None},
                 "intervals": {c.key: list(r.intervals[c]) for c in self.columns if c in r.intervals},
                 "interval_info": {c.key: info for c in self.columns if c in r.cells and (info := r.cells[c].info)},
                 "seeds": {c.key: {str(s): _number(v) for s, v in r.cells[c].seeds.items()}
                           for c in self.columns if c in r.cells and r.cells[c].multi_seed},
                 "not_ranked": {c.key: why for c in self.columns if c in r.cells and (why := r.excluded(c))}}
                for r in self.rows
            ],
            **({"autointerp": verdict.to_json()} if (verdict := self.autointerp) is not None else {}),
        }


@dataclass
class SummaryCell:
    method: str  # the row it came from (`pca@top35` for a dense basis at matched sparsity)
    cell: Cell
    group: int | None = None


@dataclass
class Summary:
    """One headline metric per task (`HEADLINE`), one row per method: fidelity at matched sparsity (a dense basis's
    top-k row), every other column as fitted; rank groups computed over the cells shown."""

    columns: list[Column]
    methods: list[str]
    cells: dict[tuple[str, Column], SummaryCell]

    def to_json(self) -> dict[str, Any]:
        return {"columns": [c.key for c in self.columns],
                "rows": [{"method": m, "cells": {c.key: {"from": sc.method, "value": _number(sc.cell.value),
                                                         "interval": list(sc.cell.interval) if sc.cell.interval else None,
                                                         "group": sc.group}
                                                 for c in self.columns if (sc := self.cells.get((m, c)))}}
                         for m in self.methods]}


def build_summary(board: Leaderboard) -> Summary:
    by_key = {(c.task, c.metric): c for c in board.columns}
    columns = [by_key[k] for k in HEADLINE if k in by_key]
    methods = list(dict.fromkeys(_base_label(r.method) for r in board.rows))
    cells: dict[tuple[str, Column], SummaryCell] = {}
    for col in columns:
        chosen: dict[str, Row] = {}
        for r in board.rows:
            if col not in r.cells or math.isnan(r.cells[col].value):
                continue
            m = _base_label(r.method)
            # Matched sparsity where it exists (the top-k group), and never a full-width basis on fidelity.
            if r.excluded(col) is None and (m not in chosen or r.group == "top-k"):
                chosen[m] = r
        groups = column_groups([Row(m, "summary", {col: r.cells[col]}) for m, r in chosen.items()], col, board._p_cache)
        for m, r in chosen.items():
            cells[(m, col)] = SummaryCell(r.method, r.cells[col], groups.get(m))
    return Summary(columns, [m for m in methods if any((m, c) in cells for c in columns)], cells)


def _base_label(label: str) -> str:
    """`pca@top35` -> `pca`; `sae-relu[l1=1]` stays (settings name a different method)."""
    return label.split("@top")[0]


def _number(value: float | None) -> float | None:
    """JSON has no NaN: a missing value is null."""
    return None if value is None or math.isnan(value) else value


def build_leaderboards(records: list[dict[str, Any]], method_order: list[str] | None = None) -> list[Leaderboard]:
    """Boards from result records; records of one method at several seeds (`sae-relu~s1`, `"seed"`) fill one row."""
    boards: dict[tuple[str, str], Leaderboard] = {}
    copies: dict[tuple[str, str], list[int]] = {}  # per board: autointerp explanations that copy, of all
    order = {m: i for i, m in enumerate(method_order or [])}
    for rec in records:
        key = (rec["model"], rec["hook"])
        board = boards.setdefault(key, Leaderboard(rec["model"], rec["hook"], [], []))
        group = "all" if rec.get("matched_k") is None or rec.get("sparse") else "top-k"
        label, _ = split_seed(rec["method"])
        seed = int(rec.get("seed") or 0)
        targets = [_row(board, label, group)]
        if rec.get("sparse") and rec.get("matched_k") is not None:
            targets.append(_row(board, label, "top-k"))  # sparse methods also stand in the matched-sparsity group
        references = _references(rec)
        shown = {ref for _, _, pairs in references for ref in pairs.values()}  # in the reference rows instead
        for row in targets:
            row.dense_full = row.group == "all" and not rec.get("sparse")
            for name, m in rec["metrics"].items():
                if name in shown:
                    continue
                col = Column(rec["task"], name, bool(m["higher_is_better"]))
                if col not in board.columns:
                    board.columns.append(col)
                target = row.cells.setdefault(col, Cell())
                _fill(target, seed, m)
                variance = ((rec.get("details") or {}).get("variance") or {}).get(name)
                if isinstance(variance, dict):
                    target.variance[seed] = variance
            for ref_label, kind, pairs in references:
                ref_row = _row(board, ref_label, row.group)
                ref_row.reference = kind
                for name, ref in pairs.items():
                    col = Column(rec["task"], name, bool(rec["metrics"][name]["higher_is_better"]))
                    cell = ref_row.cells.setdefault(col, Cell())
                    if seed not in cell.seeds:
                        _fill(cell, seed, rec["metrics"][ref])
                    elif not _same(cell.seeds[seed], rec["metrics"][ref]["value"]):
                        note = (f"{ref_label}: {rec['task']}.{ref} differs between methods (a reference must not "
                                "depend on the dictionary); the first method's value is shown")
                        if note not in board.notes:
                            board.notes.append(note)
        if (c := rec.get("details", {}).get("copies")) and group == "all":
            tally = copies.setdefault(key, [0, 0])
            tally[0], tally[1] = tally[0] + c["copied"], tally[1] + c["explanations"]
        for note in rec.get("details", {}).get("board_notes", []):  # e.g. which judge scored, and how well
            if note not in board.notes:
                board.notes.append(note)
        if judge := rec.get("judge"):  # named even where the details (and their notes) are not kept (the history)
            name = f"{judge.get('backend')}:{judge.get('model')}"
            if not any(name in n for n in board.notes):
                board.notes.append(f"{rec['task']} judge {name}")
        exclusion = rec.get("exclusion", {})
        note = f"{exclusion.get('rule', '')} ({100 * exclusion.get('excluded_fraction_eval', 0):.2f}% of eval tokens)"
        if exclusion and note not in board.notes:
            board.notes.append(note)
        if rec.get("matched_k") is not None:
            knote = f"top-k rows keep each token's k={rec['matched_k']} largest codes (k = the SAE's L0)"
            if knote not in board.notes:
                board.notes.append(knote)
        dtype = (rec.get("config") or {}).get("eval_dtype", "float32")
        if dtype != "float32" and (dnote := EVAL_DTYPE_NOTE.format(dtype=dtype)) not in board.notes:
            board.notes.append(dnote)
    for key, narrowed in _narrowed_tasks(records).items():
        board = boards[key]
        for task, patterns in narrowed.items():
            have = {r.method for r in board.rows if any(c.task == task for c in r.cells)}
            # only what the narrowing left out: a method it names but without a result failed, it was not skipped
            if missing := [r.method for r in board.rows
                           if r.group == "all" and r.reference is None and r.method not in have
                           and not method_matches(r.method, patterns)]:
                board.notes.append(f"{task} evaluates {', '.join(patterns)} only (the run's --task-methods or preset), "
                                   f"not {', '.join(missing)}: --task-methods {task}=all evaluates every method")
    for key, (copied, explained) in copies.items():
        boards[key].notes.append(f"autointerp explanations repeating a worked example of the prompt: {copied} of "
                                 f"{explained}")
    for board in boards.values():
        board.rows.sort(key=lambda r: (r.group != "all", r.reference is not None,
                                       order.get(_base(r.method), len(order)), r.method))
        board.notes.append(_uncertainty_note(board))
    return list(boards.values())


def _narrowed_tasks(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, list[str]]]:
    """Per board, the tasks its run evaluated on some methods only (`task_methods` in the recorded config), with
    the methods they were given."""
    out: dict[tuple[str, str], dict[str, list[str]]] = {}
    for rec in records:
        narrowed = ((rec.get("config") or {}).get("task_methods") or {}).get(rec.get("task_name", rec["task"]))
        if narrowed and "all" not in narrowed:
            out.setdefault((rec["model"], rec["hook"]), {})[rec["task"]] = list(narrowed)
    return out


def _fill(cell: Cell, seed: int, m: dict[str, Any]) -> None:
    """A result record's metric `m` as the cell's entry for `seed`."""
    cell.seeds[seed] = float(m["value"]) if m["value"] is not None else math.nan
    if m.get("interval"):
        cell.intervals[seed] = tuple(m["interval"])
    if m.get("interval_info"):
        cell.interval_info[seed] = m["interval_info"]
    if m.get("evidence"):
        cell.evidence[seed] = Evidence.from_json(m["evidence"])


def _references(rec: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """The record's supervised references as (row label, kind, {column metric: reference metric}), keeping the
    pairs whose two metrics the record has. Records without details (the history) have none."""
    out = []
    for name, ref in rec.get("details", {}).get("references", {}).items():
        pairs = {col: m for col, m in ref.get("metrics", {}).items() if col in rec["metrics"] and m in rec["metrics"]}
        if pairs:
            kind = ref.get("kind", "reference")
            out.append((f"{name} ({kind})", kind, pairs))
    return out


def _same(value: float, other: float | None) -> bool:
    """One reference figure seen in two methods' records: equal up to float32 noise (NaN equals NaN)."""
    other = math.nan if other is None else float(other)
    return (math.isnan(value) and math.isnan(other)) or math.isclose(value, other, rel_tol=1e-6, abs_tol=1e-9)


def _row(board: Leaderboard, label: str, group: str) -> Row:
    row = next((r for r in board.rows if r.method == label and r.group == group), None)
    if row is None:
        board.rows.append(row := Row(label, group))
    return row


def _uncertainty_note(board: Leaderboard) -> str:
    seeds = board.seeds
    if len(seeds) > 1:
        few = (f"; with {len(seeds)} seeds there is no interval and no rank group (3 or more seeds are needed)"
               if len(seeds) < 3 else "")
        return (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): each cell is the mean over seeds with their standard "
                "deviation (sd), its interval a 95% t-interval over seeds (sources: fit seeds and the eval sample drawn "
                "with each seed); rank groups ①②…: paired t-test over seeds against the group's best, Holm-corrected"
                + few)
    return ("[lo, hi]: 95% bootstrap interval over the task's units (documents, prompts, features; source: the eval "
            "sample, one fit seed); rank groups ①②…: paired bootstrap over shared units against the group's best "
            "(unpaired where units differ), Holm-corrected at 0.05, groups contiguous in value; only group ① is marked; "
            "full-width dense bases "
            "are not ranked on fidelity columns (exact by construction)")


def _base(label: str) -> str:
    return label.split("[")[0].split("@")[0]


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(value) >= 1 and value == int(value):  # counts (k, L0 of a dense basis)
        return str(int(value))
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
        return f"{value:.2e}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def signed(value: float | None) -> str:
    """A difference, with its sign."""
    return "–" if value is None else ("+" if value > 0 else "") + fmt(value)


def with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    """The value, with its 95% interval where there is one."""
    text = fmt(value)
    if interval:
        text += f" [{fmt(interval[0])}, {fmt(interval[1])}]"
    return text


def group_mark(group: int | None) -> str:
    if group is None:
        return ""
    return " " + (CIRCLED[group - 1] if group <= len(CIRCLED) else f"({group})")


def cell_text(c: Cell, compact: bool = False) -> str:
    """Value, 95% interval (± half of it when `compact`) and, with several seeds, their sd."""
    if compact:
        text = fmt(c.value) + (f" ±{fmt((c.interval[1] - c.interval[0]) / 2)}" if c.interval else "")
    else:
        text = with_interval(c.value, c.interval)
    if c.spread is not None and not (compact and c.interval):
        text += f" (sd {fmt(c.spread)})"
    return text


def cell(row: Row, col: Column, board: Leaderboard | None = None, compact: bool = False) -> str:
    """`cell_text` and, on a board, the rank group (and ⁼ where the row is exact by construction, not ranked)."""
    c = row.cells.get(col)
    if c is None:
        return "–"
    text = cell_text(c, compact)
    if board is not None:
        text += group_mark(board.rank(row, col))
        if row.excluded(col):
            text += " ⁼"
    return text


def summary_cell(sc: "SummaryCell", compact: bool = False) -> str:
    return cell_text(sc.cell, compact) + group_mark(sc.group)


def summary_markdown(board: Leaderboard) -> list[str]:
    summ = board.summary
    if not summ.columns:
        return []
    out = ["### Summary: one headline metric per task\n",
           "| method | " + " | ".join(f"{HEADLINE[(_base(c.task), c.metric)]} {'↑' if c.higher_is_better else '↓'}"
                                      for c in summ.columns) + " |",
           "|" + "---|" * (len(summ.columns) + 1)]
    for m in summ.methods:
        cells = []
        for c in summ.columns:
            sc = summ.cells.get((m, c))
            if sc is None:
                cells.append("–")
                continue
            text = summary_cell(sc) + (f" (`{sc.method}`)" if sc.method != m else "")
            cells.append(f"**{text}**" if sc.group == 1 else text)
        out.append(f"| `{m}` | " + " | ".join(cells) + " |")
    out += ["", "Fidelity columns at matched sparsity (a dense basis keeps each token's top-k codes); the others as "
            "fitted. ① marks the top group: not significantly worse than the best (see the notes below).", ""]
    return out


def to_markdown(boards: list[Leaderboard]) -> str:
    out = []
    for b in boards:
        out.append(f"## {b.model} · `{b.hook}`\n")
        out.extend(summary_markdown(b))
        out.append("### Every metric\n")
        header = ["method", "codes"] + [f"{c.task}: {c.label}" for c in b.columns]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for r in b.rows:
            cells = [f"`{r.method}`", r.group]
            for c in b.columns:
                text = cell(r, c, b)
                cells.append(f"**{text}**" if b.best(r, c) else text)
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.extend(f"- {n}" for n in b.notes)
        out.append("")
        if b.autointerp is not None:
            from reports.autointerp_power import markdown as autointerp_markdown

            out.extend(autointerp_markdown(b.autointerp))
    return "\n".join(out)


def to_rich(boards: list[Leaderboard], primary_only: bool = True):
    """rich renderables, one table per board."""
    from rich.markup import escape
    from rich.table import Table

    tables = []
    for b in boards:
        cols = [c for c in b.columns if not primary_only or (_base(c.task), c.metric) in PRIMARY]
        t = Table(title=f"{b.model} · {b.hook}", caption="\n".join(b.notes), caption_justify="left")
        t.add_column("method", style="bold", no_wrap=True)
        t.add_column("codes", no_wrap=True)
        for c in cols:
            name = PRIMARY.get((_base(c.task), c.metric), f"{c.task}.{c.metric}")
            name = escape(name if c.task == _base(c.task) else f"{name} {c.task[len(_base(c.task)):]}")
            t.add_column(f"{name} {'↑' if c.higher_is_better else '↓'}", justify="right")
        previous = None
        for r in b.rows:
            if previous is not None and r.group != previous:
                t.add_section()
            previous = r.group
            t.add_row(escape(r.method), r.group, *[
                f"[bold green]{escape(cell(r, c, b, compact=True))}[/]" if b.best(r, c)
                else escape(cell(r, c, b, compact=True)) for c in cols
            ])
        if primary_only:
            tables.append(summary_rich(b))
        tables.append(t)
        if b.autointerp is not None:
            from reports.autointerp_power import TITLE, rich_table

            tables.append(rich_table(b.autointerp, f"{TITLE} · {b.model} · {b.hook}"))
    return tables


def summary_rich(board: Leaderboard):
    from rich.markup import escape
    from rich.table import Table

    summ = board.summary
    t = Table(title=f"summary · {board.model} · {board.hook}", caption="fidelity at matched sparsity; ± half the 95% "
              "interval; ① top group (not significantly worse than the best)", caption_justify="left")
    t.add_column("method", style="bold", no_wrap=True)
    for c in summ.columns:
        t.add_column(f"{HEADLINE[(_base(c.task), c.metric)]} {'↑' if c.higher_is_better else '↓'}", justify="right")
    for m in summ.methods:
        cells = []
        for c in summ.columns:
            sc = summ.cells.get((m, c))
            text = escape(summary_cell(sc, compact=True)) if sc else "–"
            cells.append(f"[bold green]{text}[/]" if sc and sc.group == 1 else text)
        t.add_row(escape(m), *cells)
    return t
