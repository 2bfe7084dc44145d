"""Trained vs control: each method's score on the trained model beside its score on a control model.

A control (`python -m bench run --control random-init`) runs the same methods and tasks on the same architecture
with re-initialised weights (Heap et al. 2025, arXiv 2501.17727). A score that barely moves says more about the
data and the architecture than about what the model learned. Records are paired by (model, hook, method, codes
group, task, metric); the control's records carry `"control": <name>`, the trained model's `"control": None`.
One table per (model, hook, control), one row per method and metric: trained, control, trained − control.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from reports.leaderboard import PRIMARY, Column, Leaderboard, Row, _base, build_leaderboards, signed, with_interval


@dataclass
class ControlRow:
    method: str
    group: str  # "all" or "top-k", as in the leaderboard
    column: Column
    trained: float | None
    control: float | None
    trained_interval: tuple[float, float] | None = None
    control_interval: tuple[float, float] | None = None

    @property
    def difference(self) -> float | None:
        """trained − control; None when either side has no number."""
        if _missing(self.trained) or _missing(self.control):
            return None
        return self.trained - self.control


@dataclass
class ControlTable:
    model: str
    hook: str
    control: str
    rows: list[ControlRow]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hook": self.hook,
            "control": self.control,
            "notes": self.notes,
            "rows": [
                {"method": r.method, "group": r.group, "task": r.column.task, "metric": r.column.metric,
                 "higher_is_better": r.column.higher_is_better, "trained": _json(r.trained),
                 "control": _json(r.control), "difference": _json(r.difference),
                 **({"trained_interval": list(r.trained_interval)} if r.trained_interval else {}),
                 **({"control_interval": list(r.control_interval)} if r.control_interval else {})}
                for r in self.rows
            ],
        }


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def _json(value: float | None) -> float | None:
    return None if _missing(value) else value


def build_control_tables(records: list[dict[str, Any]], method_order: list[str] | None = None) -> list[ControlTable]:
    """One table per (model, hook, control) found in `records`; [] when no record comes from a control."""
    names = list(dict.fromkeys(r["control"] for r in records if r.get("control") is not None))
    if not names:
        return []
    trained_records = [r for r in records if r.get("control") is None]
    trained = {(b.model, b.hook): b for b in build_leaderboards(trained_records, method_order)}
    tables = []
    for name in names:
        control_records = [r for r in records if r.get("control") == name]
        for board in build_leaderboards(control_records, method_order):
            twin = trained.get((board.model, board.hook), Leaderboard(board.model, board.hook, [], []))
            rows = []
            for col in board.columns:
                for row in board.rows:
                    match = _row(twin, row)
                    rows.append(ControlRow(row.method, row.group, col, match.values.get(col) if match else None,
                                           row.values.get(col), match.intervals.get(col) if match else None,
                                           row.intervals.get(col)))
            notes = _notes(name, twin, board, [r for r in trained_records if (r["model"], r["hook"]) == (board.model, board.hook)],
                           [r for r in control_records if (r["model"], r["hook"]) == (board.model, board.hook)])
            tables.append(ControlTable(board.model, board.hook, name, rows, notes))
    return tables


def _row(board: Leaderboard, like: Row) -> Row | None:
    return next((r for r in board.rows if r.method == like.method and r.group == like.group), None)


def _notes(name: str, trained: Leaderboard, control: Leaderboard, trained_records: list[dict[str, Any]],
           control_records: list[dict[str, Any]]) -> list[str]:
    notes = [f"trained − control: the score the method owes to training (positive is better for ↑ metrics, "
             f"negative for ↓); the control `{name}` has the same architecture and tokenizer with re-initialised weights"]
    trained_loss, control_loss = (next((r["details"] for r in recs if r.get("task_name", r["task"]) == "loss_recovered"
                                        and "ce_clean" in r.get("details", {})), None)
                                  for recs in (trained_records, control_records))
    if trained_loss and control_loss:
        notes.extend(_loss_notes(trained_loss, control_loss))
    missing = {c.task for c in trained.columns} - {c.task for c in control.columns}
    ran = {r.get("task_name", r["task"]) for r in control_records}
    if skipped := sorted(t for t in missing if t not in ran):
        notes.append(f"not run on the control: {', '.join(skipped)} (never reads the model, or was not asked for)")
    if empty := sorted(t for t in missing if t in ran):  # e.g. ioi_patching when the control does not do the task
        notes.append(f"no metrics on the control: {', '.join(empty)} (see the control's notes below)")
    unpaired = sorted({r.method for r in trained.rows} - {r.method for r in control.rows})
    if unpaired:
        notes.append(f"no control for {', '.join(unpaired)} (not fitted on the activations: nothing to refit)")
    notes.extend(f"control: {n}" for n in control.notes if n not in trained.notes)
    return notes


# Below this gap between zero-ablated and clean loss, loss recovered (a ratio over the gap) is noise.
MIN_LOSS_GAP = 0.5  # nats


def _loss_notes(trained: dict[str, Any], control: dict[str, Any]) -> list[str]:
    """The scales loss_recovered's numbers are relative to, on both sides; a warning where one is degenerate."""
    gap = [d["ce_zero"] - d["ce_clean"] for d in (trained, control)]
    notes = [f"loss_recovered's scale on its eval contexts: clean cross-entropy trained {trained['ce_clean']:.2f}, "
             f"control {control['ce_clean']:.2f} nats; zero ablation adds {gap[0]:+.2f} and {gap[1]:+.2f} nats"
             + (f", KL {trained['kl_zero']:.2f} and {control['kl_zero']:.2f} nats" if "kl_zero" in trained and "kl_zero" in control else "")]
    if gap[1] < MIN_LOSS_GAP:
        notes.append(f"the control's loss barely depends on the hook (zero ablation {gap[1]:+.2f} nats): its loss "
                     "recovered is a ratio of near-zero differences, and its KL is small whatever the edit; compare "
                     "kl_share (each KL over that side's zero-ablation KL), not the two KLs with each other")
    return notes


def _metric(col: Column) -> str:
    return f"{col.task}: {col.label}"


def controls_markdown(tables: list[ControlTable]) -> str:
    out = ["\n# Controls: trained vs control\n"]
    for t in tables:
        out.append(f"## {t.model} · `{t.hook}` · trained vs `{t.control}`\n")
        out.append("| metric | method | codes | trained | control | trained − control |")
        out.append("|---|---|---|---|---|---|")
        for r in t.rows:
            out.append(f"| {_metric(r.column)} | `{r.method}` | {r.group} | {with_interval(r.trained, r.trained_interval)} | "
                       f"{with_interval(r.control, r.control_interval)} | {signed(r.difference)} |")
        out.append("")
        out.extend(f"- {n}" for n in t.notes)
        out.append("")
    return "\n".join(out)


def controls_rich(tables: list[ControlTable], primary_only: bool = True):
    """rich renderables, one table per (model, hook, control); the leaderboard's primary metrics only."""
    from rich.markup import escape
    from rich.table import Table

    renderables = []
    for t in tables:
        rows = [r for r in t.rows if not primary_only or (_base(r.column.task), r.column.metric) in PRIMARY]
        if not rows:
            continue
        table = Table(title=f"trained vs control ({t.control}) · {t.model} · {t.hook}", caption="\n".join(t.notes),
                      caption_justify="left")
        for name, justify in (("metric", "left"), ("method", "left"), ("codes", "left"), ("trained", "right"),
                              ("control", "right"), ("trained − control", "right")):
            table.add_column(name, justify=justify, no_wrap=name != "metric", style="bold" if name == "method" else None)
        previous = None
        for r in rows:
            col = r.column
            if previous is not None and col != previous:
                table.add_section()
            name = PRIMARY.get((_base(col.task), col.metric), f"{col.task}.{col.metric}")
            name = name if col.task == _base(col.task) else f"{name} {col.task[len(_base(col.task)):]}"
            metric = f"{name} {'↑' if col.higher_is_better else '↓'}" if col != previous else ""
            previous = col
            table.add_row(escape(metric), escape(r.method), r.group, with_interval(r.trained, r.trained_interval),
                          with_interval(r.control, r.control_interval), signed(r.difference))
        renderables.append(table)
    return renderables
