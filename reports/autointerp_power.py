"""The autointerp verdict: each method against `neurons` and `random`, with the power the board has to see a gap.

Autointerp scores each method's OWN sample of features, so two methods never share units: a method is compared
with a baseline by an unpaired bootstrap of the difference of mean per-feature scores (each side's features
resampled independently, `bench.stats.unpaired_p`). Feature ids are indices into each method's dictionary, and
methods with dictionaries of one size draw the same indices, so equal ids do not mean the same feature: they are
never paired. Each (scorer, baseline) family is Holm-corrected at α 0.05.

Beside each test, the minimum detectable difference (MDE): the true difference a two-sided test at α 0.05 would
find with 80% power, under the normal approximation,

    MDE = (z_0.975 + z_0.80) * sqrt(s_a^2 / n_a + s_b^2 / n_b)      (z sum = 2.8016)

with s the sample SD (ddof 1) of a side's per-feature scores and n its number of features. A non-significant
difference smaller than the MDE says "not resolved", not "equal". Where the records carry `details.variance`
(between-feature and within-feature variance of a per-feature score, the latter the judge/sample noise of one
feature's score at the samples per feature used), the board also says which part dominates: more features shrink
both, more samples per feature only the within part.

With several seeds, only the board's first seed is tested (each seed samples its own features; a test pooling
seeds is not implemented), and a note says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from bench.stats import ALPHA, MIN_UNITS, Evidence, holm, unpaired_p
from reports.leaderboard import Cell, Column, Leaderboard, Row, _base, _number, fmt

TASK = "autointerp"
SCORERS = ("detection_auroc", "fuzzing_auroc", "simulation")  # per-feature means, higher is better
BASELINES = ("neurons", "random")
POWER = 0.80
Z_SUM = NormalDist().inv_cdf(1 - ALPHA / 2) + NormalDist().inv_cdf(POWER)  # 1.95996 + 0.84162
TOO_FEW = "too few features"
TITLE = "autointerp: each method against neurons and random"


@dataclass
class Comparison:
    """One method against one baseline on one scorer: difference of means (method − baseline, score units), its
    two-sided p, whether it survives Holm within its (scorer, baseline) family, and the MDE of the comparison."""

    baseline: str
    difference: float | None
    p: float | None = None
    significant: bool = False
    mde: float | None = None
    reason: str | None = None  # why there is no p (TOO_FEW: a side has < 5 features or no per-feature evidence)

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "difference": _number(self.difference), "p": _number(self.p),
                "significant": self.significant, "mde": _number(self.mde),
                **({"reason": self.reason} if self.reason else {})}


@dataclass
class MethodVerdict:
    """A method row on one scorer: its value and 95% interval (at the tested seed), its number of features, and
    one `Comparison` per baseline on the board (none against itself)."""

    method: str
    value: float | None
    interval: tuple[float, float] | None
    n: int  # features with this score (0 without evidence)
    comparisons: dict[str, Comparison] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "value": _number(self.value),
                "interval": list(self.interval) if self.interval else None, "n": self.n,
                "comparisons": {b: c.to_json() for b, c in self.comparisons.items()}}


@dataclass
class ScorerVerdict:
    """One scorer's column: every method row, and the board-level power figures.

    `mde`: median MDE over the comparisons with neurons, for `mde_n` features per method (the median n of the
    methods compared). `between_sd`, `within_sd`: mean over methods of the square roots of `details.variance`'s
    between- and within-feature variances; `samples_per_feature`: their median m; `within_share`: mean over methods
    of within / (between + within), the part of a feature score's variance that more samples would shrink."""

    task: str  # the column's task (`autointerp`, or `autointerp[...]` with settings)
    metric: str
    baselines: list[str]
    rows: list[MethodVerdict]
    mde: float | None = None
    mde_n: int | None = None
    between_sd: float | None = None
    within_sd: float | None = None
    samples_per_feature: float | None = None
    within_share: float | None = None

    @property
    def key(self) -> str:
        return f"{self.task}.{self.metric}"

    def power_line(self) -> str:
        """The scorer's one-line statement of power, as the reports print it."""
        if self.mde is None:
            why = ("no neurons row" if "neurons" not in self.baselines
                   else f"no comparison with neurons has {MIN_UNITS} features a side")
            text = f"minimum detectable difference (80% power, α 0.05): none ({why})"
        else:
            text = (f"minimum detectable difference (80% power, α 0.05, n = {self.mde_n} features per method): "
                    f"{fmt(self.mde)}")
        if self.between_sd is None or self.within_sd is None:
            return text + "; between- and within-feature SD: not in these records"
        text += f"; between-feature SD {fmt(self.between_sd)}, within-feature SD {fmt(self.within_sd)}"
        if self.samples_per_feature is not None and self.within_share is not None:
            text += (f" (at m = {fmt(self.samples_per_feature)} samples per feature, judge/sample noise is "
                     f"{100 * self.within_share:.0f}% of a feature score's variance: more samples per feature shrink "
                     "only that part)")
        return text

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "baselines": self.baselines,
                "rows": [r.to_json() for r in self.rows], "mde": _number(self.mde), "mde_n": self.mde_n,
                "power": POWER, "alpha": ALPHA, "between_sd": _number(self.between_sd), "within_sd": _number(self.within_sd),
                "samples_per_feature": _number(self.samples_per_feature), "within_share": _number(self.within_share),
                "line": self.power_line()}


@dataclass
class AutointerpVerdict:
    """The board's autointerp section: one `ScorerVerdict` per scorer column present; `seed` is the seed tested."""

    seed: int | None
    scorers: list[ScorerVerdict]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "alpha": ALPHA, "power": POWER, "notes": self.notes,
                "scorers": [s.to_json() for s in self.scorers]}


def mde(a: np.ndarray, b: np.ndarray) -> float | None:
    """Minimum detectable difference of mean(a) − mean(b), per-feature scores `[n_a]`, `[n_b]` (score units), at
    80% power and two-sided α 0.05; None when a side has fewer than `MIN_UNITS` features."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if min(len(a), len(b)) < MIN_UNITS:
        return None
    return float(Z_SUM * math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))


def build(board: Leaderboard) -> AutointerpVerdict | None:
    """The verdict of `board`'s autointerp columns; None when it has none."""
    columns = [c for c in board.columns if _base(c.task) == TASK and c.metric in SCORERS]
    if not columns:
        return None
    columns.sort(key=lambda c: (c.task, SCORERS.index(c.metric)))
    seeds = board.seeds
    seed = seeds[0] if seeds else None
    notes = [f"per-feature scores of each method's own sampled features, compared unpaired (bootstrap of the "
             f"difference of means, each side's features resampled independently); p two-sided; ✓ = significant "
             f"after Holm correction within each scorer and baseline at α {ALPHA}; Δ = method − baseline"]
    if len(seeds) > 1:
        notes.append(f"{len(seeds)} seeds: seed {seed} alone is tested and shown here (each seed samples its own "
                     "features; a test pooling seeds is not implemented)")
    methods = [r for r in board.rows if r.group == "all" and r.reference is None]
    return AutointerpVerdict(seed, [_scorer(methods, col, seed) for col in columns], notes)


def _scorer(rows: list[Row], col: Column, seed: int | None) -> ScorerVerdict:
    rows = [r for r in rows if col in r.cells]
    baselines = {b: r for b in BASELINES if (r := _baseline(rows, b)) is not None}
    scores = {r.method: _scores(r.cells[col], seed) for r in rows}
    verdicts = []
    for r in rows:
        cell = r.cells[col]
        value = cell.seeds.get(seed, math.nan)
        v = MethodVerdict(r.method, None if math.isnan(value) else value, cell.intervals.get(seed),
                          0 if scores[r.method] is None else scores[r.method].n)
        for name, base in baselines.items():
            if base is not r:
                v.comparisons[name] = _compare(v.value, base.cells[col].seeds.get(seed, math.nan),
                                               scores[r.method], scores[base.method], name)
        verdicts.append(v)
    for name in baselines:  # Holm within each (scorer, baseline) family, over the comparisons that have a p
        family = {v.method: v.comparisons[name] for v in verdicts if name in v.comparisons}
        rejected = holm({m: c.p for m, c in family.items() if c.p is not None})
        for m, c in family.items():
            c.significant = rejected.get(m, False)
    out = ScorerVerdict(col.task, col.metric, list(baselines), verdicts)
    with_neurons = [(v, c) for v in verdicts if (c := v.comparisons.get("neurons")) and c.mde is not None]
    if with_neurons:
        out.mde = float(np.median([c.mde for _, c in with_neurons]))
        # the n it assumes: the median over the methods compared, neurons included
        n = [v.n for v, _ in with_neurons] + [scores[baselines["neurons"].method].n]
        out.mde_n = int(round(float(np.median(n))))
    parts = [p for r in rows if (p := _variance(r.cells[col], seed)) is not None]
    if parts:
        out.between_sd = float(np.mean([math.sqrt(b) for b, _, _ in parts]))
        out.within_sd = float(np.mean([math.sqrt(w) for _, w, _ in parts]))
        ms = [m for _, _, m in parts if m is not None]
        out.samples_per_feature = float(np.median(ms)) if ms else None
        shares = [w / (b + w) for b, w, _ in parts if b + w > 0]
        out.within_share = float(np.mean(shares)) if shares else None
    return out


def _compare(value: float | None, base_value: float, a: Evidence | None, b: Evidence | None,
             baseline: str) -> Comparison:
    diff = None if value is None or math.isnan(base_value) else value - base_value
    if a is None or b is None or min(a.n, b.n) < MIN_UNITS:
        return Comparison(baseline, diff, reason=TOO_FEW)
    # Never paired (see the module docstring): equal ids in two dictionaries are different features.
    p = unpaired_p(a, b)
    size = mde(a.columns["x"], b.columns["x"])
    if math.isnan(p):
        return Comparison(baseline, diff, mde=size, reason="the bootstrap of the difference is undefined")
    return Comparison(baseline, diff, p, mde=size)


def _scores(cell: Cell, seed: int | None) -> Evidence | None:
    """The cell's per-feature evidence at `seed` when it is a mean of per-feature scores (column `x`), else None."""
    ev = cell.evidence.get(seed)
    if ev is None or ev.statistic != "mean" or set(ev.columns) != {"x"} or ev.params.get("grouped"):
        return None
    return ev


def _variance(cell: Cell, seed: int | None) -> tuple[float, float, float | None] | None:
    """(between, within, samples per feature) from the record's `details.variance` for this metric, if finite."""
    v = cell.variance.get(seed)
    try:
        between, within = float(v["between"]), float(v["within"])
    except (TypeError, KeyError, ValueError):
        return None
    if not (math.isfinite(between) and math.isfinite(within)) or between < 0 or within < 0:
        return None
    m = v.get("samples_per_feature")
    return between, within, None if m is None else float(m)


def _baseline(rows: list[Row], name: str) -> Row | None:
    """The baseline's row: the one labelled `name`, else the only one whose method is `name` (with settings)."""
    exact = [r for r in rows if r.method == name]
    if exact:
        return exact[0]
    similar = [r for r in rows if _base(r.method) == name]
    return similar[0] if len(similar) == 1 else None


def comparison_text(c: Comparison | None) -> str:
    """`+0.3012 (p < 0.001 ✓)`, `+0.0100 (p 0.412)`, `+0.0100 (too few features)`; `–` against itself."""
    if c is None:
        return "–"
    diff = "–" if c.difference is None else ("+" if c.difference > 0 else "") + fmt(c.difference)
    if c.p is None:
        return f"{diff} ({c.reason})"
    p = "p < 0.001" if c.p < 0.001 else f"p {c.p:.3f}"
    return f"{diff} ({p}{' ✓' if c.significant else ''})"


def value_text(v: MethodVerdict) -> str:
    text = fmt(v.value)
    if v.interval:
        text += f" [{fmt(v.interval[0])}, {fmt(v.interval[1])}]"
    return text


def markdown(verdict: AutointerpVerdict) -> list[str]:
    """The section's Markdown lines: a table per scorer and its power line, then the notes."""
    out = [f"### {TITLE}\n"]
    for s in verdict.scorers:
        out += [f"**{s.key}** ↑\n", "| method | features | value [95% interval] | " + " | ".join(
            f"Δ vs {b}" for b in s.baselines) + " |", "|" + "---|" * (3 + len(s.baselines))]
        for v in s.rows:
            out.append(f"| `{v.method}` | {v.n} | {value_text(v)} | "
                       + " | ".join(comparison_text(v.comparisons.get(b)) for b in s.baselines) + " |")
        out += ["", s.power_line(), ""]
    out += [f"- {n}" for n in verdict.notes] + [""]
    return out


def rich_table(verdict: AutointerpVerdict, title: str):
    """One rich Table: a section per scorer, the power lines and notes in the caption."""
    from rich.markup import escape
    from rich.table import Table

    baselines = list(dict.fromkeys(b for s in verdict.scorers for b in s.baselines))
    caption = "\n".join([f"{s.key}: {s.power_line()}" for s in verdict.scorers] + verdict.notes)
    t = Table(title=escape(title), caption=escape(caption), caption_justify="left")
    t.add_column("scorer", no_wrap=True)
    t.add_column("method", style="bold", no_wrap=True)
    t.add_column("features", justify="right")
    t.add_column("value [95%]", justify="right")
    for b in baselines:
        t.add_column(f"Δ vs {escape(b)}", justify="right")
    for i, s in enumerate(verdict.scorers):
        if i:
            t.add_section()
        for j, v in enumerate(s.rows):
            cells = []
            for b in baselines:
                c = v.comparisons.get(b)
                text = escape(comparison_text(c))
                cells.append(f"[bold green]{text}[/]" if c is not None and c.significant else text)
            t.add_row(escape(s.key) if j == 0 else "", escape(v.method), str(v.n), escape(value_text(v)), *cells)
    return t
