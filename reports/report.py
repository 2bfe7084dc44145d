"""`python -m bench report`: the leaderboards of one or more runs in every format a reader needs.

Formats: `terminal` (rich tables, printed), `md` (GitHub-ready `leaderboard.md`), `json` (`report.json`, valid
against `reports/schema/report.schema.json`, shipped with the package), `csv` (`leaderboard.csv`, one row per
run × board × method × codes group × metric) and `html` (the static site of `reports.html`). The tables are those
`python -m bench run` prints and writes at its end: the same `reports.leaderboard` and `reports.controls` code.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.io import atomic_write_json, atomic_write_text
from bench.results import now
from reports import history as hist
from reports.controls import build_control_tables, controls_markdown, controls_rich
from reports.leaderboard import PRIMARY, to_markdown, to_rich
from reports.plots import Chart, Point, Series
from reports.runs import Run

FORMATS = ("terminal", "md", "html", "json", "csv")
SCHEMA_ID = "decompbench.report/1"


def schema() -> dict[str, Any]:
    """The JSON Schema of `report.json` (and of each run's `leaderboard.json`: its `$defs/run`)."""
    import json

    return json.loads(resources.files("reports").joinpath("schema/report.schema.json").read_text())


def parse_formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    if bad := [f for f in formats if f not in FORMATS]:
        raise BenchError(f"unknown report format {bad[0]!r}; choose from {', '.join(FORMATS)} (comma-separated)")
    return formats


def run_json(run: Run) -> dict[str, Any]:
    boards = run.boards
    controls = build_control_tables(run.records, run.method_order)
    return {"run": {"name": run.name, "source": run.display_source, "history_id": run.history_id, "started": run.started,
                    "git_commit": run.git_commit, "config_fingerprint": run.config_fingerprint,
                    "preset": run.config.get("preset"), "seed": run.config.get("seed"),
                    "versions": run.env.get("versions") or {}},
            "boards": [b.to_json() for b in boards], "controls": [c.to_json() for c in controls]}


def report_json(runs: list[Run]) -> dict[str, Any]:
    return {"schema": SCHEMA_ID, "generated": now(), "runs": [run_json(r) for r in runs]}


def markdown(runs: list[Run]) -> str:
    out = []
    for run in runs:
        boards = run.boards
        controls = build_control_tables(run.records, run.method_order)
        out.append(f"# {run.name}\n\ncommit `{(run.git_commit or '?')[:10]}` · preset {run.config.get('preset', '?')} · "
                   f"started {run.started or '?'}\n\n{to_markdown(boards)}"
                   + (controls_markdown(controls) if controls else ""))
    return "\n".join(out)


def csv_text(runs: list[Run]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "git_commit", "model", "hook", "method", "codes", "task", "metric", "higher_is_better",
                "value", "interval_lo", "interval_hi", "best", "group"])
    for run in runs:
        for b in run.boards:
            for r in b.rows:
                for c in b.columns:
                    if c not in r.values:
                        continue
                    lo, hi = r.intervals.get(c, ("", ""))
                    value = r.values[c]
                    w.writerow([run.name, run.git_commit or "", b.model, b.hook, r.method, r.group, c.task, c.metric,
                                int(c.higher_is_better), "" if value != value else repr(value), lo, hi,
                                int(b.best(r, c)), b.rank(r, c) or ""])
    return buf.getvalue()


def print_terminal(runs: list[Run], console) -> None:
    from rich.markup import escape

    for run in runs:
        boards = run.boards
        console.print(f"[bold]{run.name}[/] ({escape(run.display_source)})", highlight=False, markup=True)
        for table in [*to_rich(boards), *controls_rich(build_control_tables(run.records, run.method_order))]:
            console.print(table)


def history_section(path: Path | None, runs: list[Run]) -> tuple[list[Chart], str] | None:
    """Trend charts of the leaderboard's primary metrics over the history (None without a history)."""
    from html import escape

    try:
        entries = hist.runs(path)
    except BenchError:
        return None
    if not entries:
        return None
    boards = {(r["model"], r["hook"]) for run in runs for r in run.trained}
    charts = []
    for task, metric in PRIMARY:
        points = []
        for model, hook in sorted(boards):
            try:
                points += hist.trend(path, f"{task}.{metric}", model=model, hook=hook)
            except BenchError:
                continue
        if not points:
            continue
        order = {e.id: i for i, e in enumerate(entries)}
        labels = [f"#{e.id} {(e.git_commit or '?')[:7]}" for e in entries]
        series = [Series(name, [Point(order[p.run_id], p.value, f"run #{p.run_id} ({p.started})", p.interval)
                                for p in pts if p.value is not None])
                  for name, pts in hist.series(points).items()]
        charts.append(Chart(f"history-{task}-{metric}", f"{task}.{metric} across runs", "run", metric, series,
                            categories=labels, dodge=False))
    rows = "".join(f"<tr><td>#{e.id}</td><td class=\"name\">{escape(e.name)}</td><td>{escape(e.started or '?')}</td>"
                   f"<td><code>{escape((e.git_commit or '?')[:10])}</code></td><td>{escape(e.preset or '?')}</td>"
                   f"<td>{e.n_metrics}</td></tr>" for e in entries)
    table = ("<h2>Runs in the history</h2><table><thead><tr><th>id</th><th class=\"name\">run</th><th>started</th>"
             f"<th>commit</th><th>preset</th><th>metrics</th></tr></thead><tbody>{rows}</tbody></table>")
    return charts, table


def write_report(runs: list[Run], formats: list[str], out: Path | None, history_path: Path | None,
                 console) -> list[Path]:
    """Write (or print) `runs` in `formats`; returns the files written."""
    from reports.html import write_site

    if out is None and set(formats) - {"terminal"}:
        raise BenchError("file formats need --out DIR (or use --format terminal)")
    written = []
    if "terminal" in formats:
        print_terminal(runs, console)
    if "md" in formats:
        atomic_write_text(out / "leaderboard.md", markdown(runs))
        written.append(out / "leaderboard.md")
    if "json" in formats:
        atomic_write_json(out / "report.json", report_json(runs))
        written.append(out / "report.json")
    if "csv" in formats:
        atomic_write_text(out / "leaderboard.csv", csv_text(runs))
        written.append(out / "leaderboard.csv")
    if "html" in formats:
        written.append(write_site(runs, out, history_section(history_path, runs)))
    return written
