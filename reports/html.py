"""A self-contained static site: `index.html` (the runs), a page per run, `history.html` (trends).

Works opened from disk with no network: one HTML file per page with its CSS, SVG charts and a few lines of script
inlined; the charts are also written as `plots/<run>/<chart>.svg` for papers. A Content-Security-Policy admits only
that one script (by hash), so nothing else could run even if some text slipped through unescaped; and nothing does:
every string from a record (contexts and explanations come from the corpus and an LLM, method names from the
command line) goes through `html.escape`, and the script never writes HTML.
"""

from __future__ import annotations

import base64
import hashlib
import re
from html import escape
from pathlib import Path
from typing import Any

from bench.io import atomic_write_text
from reports.autointerp_power import TITLE as AUTOINTERP_TITLE
from reports.autointerp_power import comparison_text, value_text
from reports.controls import ControlTable, build_control_tables
from reports.figures import charts as board_charts
from reports.leaderboard import (HEADLINE, PRIMARY, Leaderboard, _base, cell, fmt, signed,
                                 summary_cell, with_interval)
from reports.plots import Chart, svg
from reports.runs import Run

# Legend entries toggle their series; no HTML is written from script.
SCRIPT = """
document.querySelectorAll('svg.chart').forEach(function (chart) {
  chart.querySelectorAll('.legend-item').forEach(function (item) {
    function toggle() {
      var id = item.getAttribute('data-series');
      var series = chart.querySelector('.series[data-series="' + id + '"]');
      var hidden = series.classList.toggle('off');
      item.classList.toggle('off', hidden);
    }
    item.addEventListener('click', toggle);
    item.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { toggle(); } });
  });
});
"""
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.name, th.name { text-align: left; }
td.best { font-weight: bold; background: #e6f4e6; }
tr.group td { background: #fafafa; text-align: left; font-style: italic; }
.scroll { overflow-x: auto; max-width: 100%; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
.charts figure { margin: 0; }
figcaption { font-size: 12px; color: #555; max-width: 680px; }
.series.off { display: none; }
.legend-item.off { opacity: 0.35; }
mark { background: #ffe08a; }
.context { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; text-align: left; }
details { margin: 0.4em 0; }
summary { cursor: pointer; }
.notes li { font-size: 13px; }
.meta td { text-align: left; }
"""
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()}'")
_MARKED = re.compile(r"<<(.*?)>>", re.S)  # autointerp marks the activating tokens <<like this>>


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
            f"<script>{SCRIPT}</script>\n</body></html>\n")


def highlighted(context: str) -> str:
    """A context with its activating tokens in <mark>; every piece escaped."""
    parts = _MARKED.split(context)
    return "".join(f"<mark>{escape(p)}</mark>" if i % 2 else escape(p) for i, p in enumerate(parts))


def leaderboard_table(board: Leaderboard, primary_only: bool) -> str:
    """The board as an HTML table: the terminal's primary metrics, or every metric."""
    columns = [c for c in board.columns if not primary_only or (_base(c.task), c.metric) in PRIMARY]
    head = "".join(f'<th title="{escape(c.task)}.{escape(c.metric)}">{escape(c.task)}<br>{escape(c.label)}</th>'
                   for c in columns)
    rows, previous = [], None
    for r in board.rows:
        if r.group != previous:
            what = "each method as fitted" if r.group == "all" else "matched sparsity: each token's top-k codes"
            rows.append(f'<tr class="group"><td colspan="{len(columns) + 1}">{escape(r.group)}: {what}</td></tr>')
            previous = r.group
        cells = "".join(f'<td class="best">{escape(cell(r, c, board))}</td>' if board.best(r, c) else f"<td>{escape(cell(r, c, board))}</td>"
                        for c in columns)
        rows.append(f'<tr><td class="name"><code>{escape(r.method)}</code></td>{cells}</tr>')
    return (f'<div class="scroll"><table class="leaderboard"><thead><tr><th class="name">method</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def summary_table(board: Leaderboard) -> str:
    """The compact table a reader publishes: one headline metric per task, with interval and rank group."""
    summ = board.summary
    if not summ.columns:
        return ""
    head = "".join(f'<th title="{escape(c.key)}">{escape(HEADLINE[(_base(c.task), c.metric)])} '
                   f"{'↑' if c.higher_is_better else '↓'}</th>" for c in summ.columns)
    rows = []
    for m in summ.methods:
        cells = []
        for c in summ.columns:
            sc = summ.cells.get((m, c))
            text = summary_cell(sc) + (f" ({sc.method})" if sc.method != m else "") if sc else "–"
            cells.append(f'<td class="best">{escape(text)}</td>' if sc and sc.group == 1 else f"<td>{escape(text)}</td>")
        rows.append(f'<tr><td class="name"><code>{escape(m)}</code></td>{"".join(cells)}</tr>')
    return ('<h3>Summary: one headline metric per task</h3><div class="scroll"><table class="leaderboard summary">'
            f'<thead><tr><th class="name">method</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            "<p>Fidelity columns at matched sparsity (a dense basis keeps each token's top-k codes); the others as "
            "fitted.</p>")


def autointerp_power_table(board: Leaderboard) -> str:
    """The board's autointerp section (`reports.autointerp_power`): a table per scorer and its power line; "" when the
    board has no autointerp columns."""
    verdict = board.autointerp
    if verdict is None:
        return ""
    out = [f"<h3>{escape(AUTOINTERP_TITLE)}</h3>"]
    for s in verdict.scorers:
        head = "".join(f"<th>Δ vs {escape(b)}</th>" for b in s.baselines)
        rows = []
        for v in s.rows:
            cells = "".join(f'<td class="best">{escape(comparison_text(c))}</td>' if (c := v.comparisons.get(b))
                            and c.significant else f"<td>{escape(comparison_text(c))}</td>" for b in s.baselines)
            rows.append(f'<tr><td class="name"><code>{escape(v.method)}</code></td><td>{v.n}</td>'
                        f"<td>{escape(value_text(v))}</td>{cells}</tr>")
        out.append(f"<h4><code>{escape(s.key)}</code> ↑</h4>"
                   '<div class="scroll"><table class="autointerp-power"><thead><tr><th class="name">method</th>'
                   f"<th>features</th><th>value [95% interval]</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
                   f"</table></div><p>{escape(s.power_line())}</p>")
    return "".join(out) + _notes(verdict.notes)


def controls_table(table: ControlTable) -> str:
    rows = "".join(
        f'<tr><td class="name">{escape(r.column.task)}.{escape(r.column.label)}</td><td class="name"><code>'
        f"{escape(r.method)}</code></td><td>{escape(r.group)}</td><td>{escape(with_interval(r.trained, r.trained_interval))}</td>"
        f"<td>{escape(with_interval(r.control, r.control_interval))}</td><td>{escape(signed(r.difference))}</td></tr>" for r in table.rows)
    return (f"<h3>trained vs control <code>{escape(table.control)}</code></h3>"
            '<div class="scroll"><table><thead><tr><th class="name">metric</th><th class="name">method</th><th>codes</th>'
            f"<th>trained</th><th>control</th><th>trained − control</th></tr></thead><tbody>{rows}</tbody></table></div>"
            + _notes(table.notes))


def _notes(notes: list[str]) -> str:
    return '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>" if notes else ""


def figure(chart: Chart) -> str:
    caption = f"<figcaption>{escape(chart.note)}</figcaption>" if chart.note else ""
    return f"<figure>{svg(chart)}{caption}</figure>"


def _kind(d: dict[str, Any]) -> str:
    """How a detection excerpt was drawn ("top", "quantile 2/6", "non-firing", ...; older records: top/random)."""
    return str(d["drawn"]) if d.get("drawn") else ("top" if d.get("top") else "random")


def autointerp_details(records: list[dict[str, Any]]) -> str:
    """Per method, per feature: the explanation, its scores and its top contexts with the activating tokens marked."""
    out = []
    for rec in records:
        if rec.get("task_name", rec["task"]) != "autointerp":
            continue
        features = rec.get("details", {}).get("features", [])
        if not features:
            continue
        items = []
        for f in features:
            contexts = "".join(f'<li class="context">{highlighted(str(c))}</li>' for c in f.get("explain_excerpts", []))
            scored = "".join(
                f'<tr><td class="context">{escape(str(d.get("text", "")))}</td><td>{escape(_kind(d))}'
                f'</td><td>{escape(fmt(d.get("yes_prob")))}</td></tr>' for d in f.get("detection", []))
            fuzzed = "".join(
                f'<tr><td class="context">{highlighted(str(d.get("text", "")))}</td><td>'
                f'{"true marks" if d.get("positive") else "marks moved"}</td><td>{escape(fmt(d.get("yes_prob")))}'
                '</td></tr>' for d in f.get("fuzzing", []))
            head = '<table><thead><tr><th class="name">excerpt</th><th>kind</th><th>judge P(yes)</th></tr></thead>'
            items.append(
                f'<details class="feature"><summary>feature <code>{escape(str(f.get("feature")))}</code>: '
                f'<span class="explanation">{escape(str(f.get("explanation", "")))}</span> · simulation '
                f'{escape(fmt(f.get("simulation")))} · detection AUROC {escape(fmt(f.get("detection_auroc")))}'
                + (f' · fuzzing AUROC {escape(fmt(f.get("fuzzing_auroc")))}' if "fuzzing_auroc" in f else "")
                + "</summary><p>top-activating contexts (the judge saw these; <mark>marked</mark> tokens fire most):</p>"
                f"<ol>{contexts}</ol>"
                + (f"<p>held-out detection excerpts:</p>{head}<tbody>{scored}</tbody></table>" if scored else "")
                + (f"<p>fuzzing (marked tokens shown to the judge):</p>{head}<tbody>{fuzzed}</tbody></table>"
                   if fuzzed else "")
                + "</details>")
        out.append(f"<h4><code>{escape(rec['method'])}</code> ({len(features)} features)</h4>{''.join(items)}")
    if not out:
        return ""
    return "<h3>Autointerp: per-feature detail</h3>" + "".join(out)


def run_page(run: Run, boards: list[Leaderboard], controls: list[ControlTable], chart_sets: list[list[Chart]]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in (run.env.get("versions") or {}).items() if v)
    meta = "".join(f"<tr><th class=\"name\">{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in (
        ("source", run.display_source), ("started", run.started or "?"), ("git commit", run.git_commit or "?"),
        ("preset", run.config.get("preset", "?")), ("seed", run.config.get("seed", "?")),
        ("config fingerprint", run.config_fingerprint), ("versions", versions)))
    body = [f'<p><a href="index.html">← all runs</a></p><h1>Run <code>{escape(run.name)}</code></h1>',
            f'<table class="meta">{meta}</table>']
    for board, chart_set in zip(boards, chart_sets, strict=True):
        body.append(f"<h2>{escape(board.model)} · <code>{escape(board.hook)}</code></h2>")
        body.append(summary_table(board))
        body.append("<p>↑ higher is better, ↓ lower is better; [lo, hi] is the 95% interval; ①②… are rank groups "
                    "(① = not significantly worse than the column's best within its codes group, the only one "
                    "<b>marked</b>); ⁼ = exact by construction, not ranked. The notes say how.</p>")
        body.append(leaderboard_table(board, primary_only=True) + _notes(board.notes))
        body.append(f"<details><summary>every metric ({len(board.columns)} columns)</summary>"
                    f"{leaderboard_table(board, primary_only=False)}</details>")
        body.append('<h3>Plots</h3><p>Hover a point for its value; click a legend entry to hide or show it.</p>'
                    f'<div class="charts">{"".join(figure(c) for c in chart_set)}</div>')
        body.extend(controls_table(t) for t in controls if (t.model, t.hook) == (board.model, board.hook))
        body.append(autointerp_power_table(board))
        body.append(autointerp_details([r for r in run.trained if (r["model"], r["hook"]) == (board.model, board.hook)]))
    return page(f"decompbench · {run.name}", "\n".join(body))


def index_page(runs: list[Run], pages: list[str], has_history: bool) -> str:
    rows = "".join(
        f'<tr><td class="name"><a href="{escape(p)}">{escape(r.name)}</a></td><td>{escape(r.started or "?")}</td>'
        f'<td><code>{escape((r.git_commit or "?")[:10])}</code></td><td>{escape(str(r.config.get("preset", "?")))}</td>'
        f'<td class="name">{escape(", ".join(_boards(r)))}</td>'
        f"<td>{len(r.records)}</td></tr>" for r, p in zip(runs, pages, strict=True))
    history = '<p><a href="history.html">History: metric trends across commits</a></p>' if has_history else ""
    return page("decompbench reports", "<h1>decompbench reports</h1>" + history
                + '<table><thead><tr><th class="name">run</th><th>started</th><th>commit</th><th>preset</th>'
                f'<th class="name">model · hook</th><th>results</th></tr></thead><tbody>{rows}</tbody></table>')


def _boards(run: Run) -> list[str]:
    return sorted({f"{r['model']} · {r['hook']}" for r in run.trained})


def history_page(charts: list[Chart], table: str) -> str:
    return page("decompbench history", '<p><a href="index.html">← all runs</a></p><h1>History</h1>'
                "<p>Each metric across the runs in the history, oldest first (x: run id · commit).</p>"
                f'<div class="charts">{"".join(figure(c) for c in charts)}</div>{table}')


def write_site(runs: list[Run], out: Path, history: tuple[list[Chart], str] | None = None) -> Path:
    """Write the site under `out`; returns the index page."""
    out = Path(out)
    pages = []
    for run in runs:
        boards = run.boards
        controls = build_control_tables(run.records, run.method_order)
        chart_sets = [board_charts([r for r in run.trained if (r["model"], r["hook"]) == (b.model, b.hook)])
                      for b in boards]
        name = f"run-{run.slug}.html"
        atomic_write_text(out / name, run_page(run, boards, controls, chart_sets))
        for chart in (c for cs in chart_sets for c in cs):
            atomic_write_text(out / "plots" / run.slug / f"{chart.id}.svg", svg(chart))
        pages.append(name)
    if history is not None:
        atomic_write_text(out / "history.html", history_page(*history))
        for chart in history[0]:
            atomic_write_text(out / "plots" / "history" / f"{chart.id}.svg", svg(chart))
    atomic_write_text(out / "index.html", index_page(runs, pages, history is not None))
    return out / "index.html"
