"""Leaderboards: one table per (model, hook), methods as rows, task metrics as columns.

Rows are grouped by how many codes each token keeps: `all` (each method as fitted) and `top-k` (dense methods
restricted to each token's k largest codes, k the SAE's L0, beside the SAEs), so methods are compared at matched
sparsity as well as in full. The best value of each column within a group is marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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
    ("sparse_probing", "auroc_k5"): "probe k=5",
    ("sparse_probing", "dense_auroc"): "dense probe",
    ("autointerp", "simulation"): "autointerp sim.",
    ("autointerp", "detection_auroc"): "autointerp detect",
    ("ioi_patching", "k50"): "IOI k50",
    ("ioi_patching", "kl_auc"): "IOI KL AUC",
    ("concept_erasure", "behaviour_erasure"): "erase behaviour",
    ("concept_erasure", "erasure"): "erase probe",
    ("concept_erasure", "damage_kl"): "erase damage KL",
}


@dataclass(frozen=True)
class Column:
    task: str
    metric: str
    higher_is_better: bool

    @property
    def label(self) -> str:
        return f"{self.metric} {'↑' if self.higher_is_better else '↓'}"


@dataclass
class Row:
    method: str
    group: str  # "all" or "top-k"
    values: dict[Column, float] = field(default_factory=dict)
    intervals: dict[Column, tuple[float, float]] = field(default_factory=dict)


@dataclass
class Leaderboard:
    model: str
    hook: str
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    def best(self, row: Row, col: Column) -> bool:
        peers = [r.values[col] for r in self.rows if r.group == row.group and col in r.values
                 and not math.isnan(r.values[col])]
        if col not in row.values or len(peers) < 2:
            return False
        target = max(peers) if col.higher_is_better else min(peers)
        return row.values[col] == target

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hook": self.hook,
            "notes": self.notes,
            "columns": [{"task": c.task, "metric": c.metric, "higher_is_better": c.higher_is_better} for c in self.columns],
            "rows": [
                {"method": r.method, "group": r.group,
                 "metrics": {f"{c.task}.{c.metric}": _number(r.values.get(c)) for c in self.columns},
                 "best": [f"{c.task}.{c.metric}" for c in self.columns if self.best(r, c)],
                 "intervals": {f"{c.task}.{c.metric}": list(r.intervals[c]) for c in self.columns if c in r.intervals}}
                for r in self.rows
            ],
        }


def _number(value: float | None) -> float | None:
    """JSON has no NaN: a missing value is null."""
    return None if value is None or math.isnan(value) else value


def build_leaderboards(records: list[dict[str, Any]], method_order: list[str] | None = None) -> list[Leaderboard]:
    boards: dict[tuple[str, str], Leaderboard] = {}
    order = {m: i for i, m in enumerate(method_order or [])}
    for rec in records:
        key = (rec["model"], rec["hook"])
        board = boards.setdefault(key, Leaderboard(rec["model"], rec["hook"], [], []))
        group = "all" if rec.get("matched_k") is None or rec.get("sparse") else "top-k"
        rows = [r for r in board.rows if r.method == rec["method"] and r.group == group]
        row = rows[0] if rows else Row(rec["method"], group)
        if not rows:
            board.rows.append(row)
        for name, m in rec["metrics"].items():
            col = Column(rec["task"], name, bool(m["higher_is_better"]))
            if col not in board.columns:
                board.columns.append(col)
            row.values[col] = float(m["value"]) if m["value"] is not None else math.nan
            if m.get("interval"):
                row.intervals[col] = tuple(m["interval"])
        # Sparse methods also stand in the matched-sparsity group, beside the top-k rows.
        if rec.get("sparse") and rec.get("matched_k") is not None:
            twin = next((r for r in board.rows if r.method == rec["method"] and r.group == "top-k"), None)
            if twin is None:
                board.rows.append(twin := Row(rec["method"], "top-k"))
            twin.values.update({c: v for c, v in row.values.items()})
            twin.intervals.update(row.intervals)
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
    for board in boards.values():
        board.rows.sort(key=lambda r: (r.group != "all", order.get(_base(r.method), len(order)), r.method))
    return list(boards.values())


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
    """The value, with its 95% interval where the task gave one."""
    text = fmt(value)
    if interval:
        text += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    return text


def cell(row: Row, col: Column) -> str:
    return with_interval(row.values.get(col), row.intervals.get(col))


def to_markdown(boards: list[Leaderboard]) -> str:
    out = []
    for b in boards:
        out.append(f"## {b.model} · `{b.hook}`\n")
        header = ["method", "codes"] + [f"{c.task}: {c.label}" for c in b.columns]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for r in b.rows:
            cells = [f"`{r.method}`", r.group]
            for c in b.columns:
                text = cell(r, c)
                cells.append(f"**{text}**" if b.best(r, c) else text)
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.extend(f"- {n}" for n in b.notes)
        out.append("")
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
                f"[bold green]{cell(r, c)}[/]" if b.best(r, c) else cell(r, c) for c in cols
            ])
        tables.append(t)
    return tables
