"""Score regressions: every metric of a current run against a baseline, flagged when it moves the bad way.

`python -m bench compare BASELINE CURRENT` exits 1 when any (model, hook, control, method, task, metric) of the
baseline
- got worse by more than its tolerance,
- had a finite value and has none now (None, NaN or ±inf), or
- is missing in the current run (its result file, or the metric in it: a task that returns `{}` fails), unless
  `--allow-removed PATTERN` names it as an intended removal;
0 otherwise; 2 when the runs cannot be compared (a missing run, or a setting that changes what the numbers mean:
the error names the field). What only the current run has is listed, never an error.

Tolerance of a metric, first that applies:
1. `--tolerance PATTERN=VALUE` on the command line;
2. the baseline directory's `tolerances.json` (`{"PATTERN": VALUE}`, keys starting with `_` are comments): the
   committed one holds one entry per `method:task.metric`, measured by `compare SEED_A SEED_B --write-tolerances
   FILE` (`spread_tolerances`: the seed-to-seed spread and the reported intervals);
3. max(the half-width of the 95% interval the task reported, baseline or current; the default below).
The default is max(`ABS_TOL`, `REL_TOL` × |baseline|). PATTERN is a glob over `task.metric` or
`method:task.metric` (e.g. `autointerp.*`, `sae-topk:reconstruction.fvu`); VALUE is absolute (`0.05`) or relative
to the baseline (`10%`). Patterns are tried most specific first (the longest). `--allow-removed` patterns are
globs over `method:task.metric`, `method:task`, `task.metric` and `task` (e.g. `kmeans:*`, `autointerp`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from reports.leaderboard import fmt, signed
from reports.runs import Run

ABS_TOL = 0.01
UNIT_CAP = 0.2  # the widest tolerance written for a [0, 1] metric: twice it, a regression, stays on the scale
REL_TOL = 0.05
TOLERANCE_FILE = "tolerances.json"

# RunConfig fields that change what a number means; a difference makes two runs incomparable. Left out on purpose:
# methods and tasks (a method or task on one side only is listed, not an error), seed (a seed-to-seed comparison is
# legitimate), device, eval_dtype (noted: a float32-vs-bfloat16 comparison is how one sees what bf16 moves),
# harvest_batch, and the judge's transport settings (concurrency, timeouts, threads, cache).
CONFIG_FIELDS = ("model", "preset", "text", "ctx_len", "train_contexts", "eval_contexts", "exclusion", "matched_k",
                 "method_params", "task_params", "judge.judge", "judge.base_url", "judge.model")
# Per-record identity that must agree too: where the activations came from.
RECORD_FIELDS = ("hook", "activations.model_fingerprint", "activations.corpus", "activations.ctx_len")


@dataclass(frozen=True)
class Tolerance:
    value: float  # absolute, in the metric's units
    source: str  # "--tolerance …", "tolerances.json …", "interval", "default"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@dataclass(frozen=True)
class Change:
    """One metric of one (model, hook, control, method, task): its baseline value and what became of it."""

    key: tuple[str, str, str, str, str, str]  # model, hook, control ('' = trained), method, task, metric
    higher_is_better: bool
    baseline: float | None
    current: float | None
    tolerance: Tolerance
    present: bool = True  # False: the metric (or its whole result) is missing in the current run
    allowed_by: str | None = None  # the --allow-removed pattern that makes a missing metric an intended removal
    label: str = ""  # the baseline's method label where the key has the family (`pca@top64` for `pca@topk`)

    @property
    def method(self) -> str:
        label = self.label or self.key[3]
        return label if not self.key[2] else f"{label} [{self.key[2]}]"

    @property
    def metric(self) -> str:
        return f"{self.key[4]}.{self.key[5]}"

    @property
    def delta(self) -> float | None:
        if not (_finite(self.baseline) and _finite(self.current)):
            return None
        return self.current - self.baseline

    @property
    def worse_by(self) -> float | None:
        """How far the metric moved in its bad direction (negative: it improved)."""
        if self.delta is None:
            return None
        return -self.delta if self.higher_is_better else self.delta

    @property
    def status(self) -> str:
        """regressed | improved | ok | lost (a finite value became None, NaN or ±inf) | gained | none (no finite
        value on either side) | missing (absent from the current run) | removed (absent, and allowed to be)."""
        if not self.present:
            return "removed" if self.allowed_by else "missing"
        if not _finite(self.baseline):
            return "gained" if _finite(self.current) else "none"
        if not _finite(self.current):
            return "lost"
        worse = self.worse_by
        if worse > self.tolerance.value:
            return "regressed"
        return "improved" if -worse > self.tolerance.value else "ok"

    @property
    def regressed(self) -> bool:
        return self.status in REGRESSED


REGRESSED = {"regressed", "lost", "missing"}


@dataclass
class Comparison:
    baseline: Run
    current: Run
    changes: list[Change]  # every metric of the baseline, missing ones included
    only_baseline: list[str] = field(default_factory=list)  # "method · task" whose whole result is missing now
    only_current: list[str] = field(default_factory=list)  # "method · task" with metrics only the current run has
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regressed]

    def regression_lines(self) -> list[str]:
        """One line per regression for stderr; a result missing as a whole is one line, not one per metric."""
        lines, done = [], set()
        for c in self.regressions:
            unit = c.key[:5]
            if c.status == "missing" and unit in self.whole_units:
                if unit not in done:
                    done.add(unit)
                    n = sum(d.key[:5] == unit for d in self.changes)
                    lines.append(f"REGRESSION {c.method} · {c.key[4]}: missing in the current run ({n} metric"
                                 f"{'s' if n != 1 else ''}; if intended: --allow-removed '{c.key[3]}:{c.key[4]}')")
            elif c.status == "missing":
                lines.append(f"REGRESSION {c.method} · {c.metric}: missing in the current run "
                             f"(if intended: --allow-removed '{c.key[3]}:{c.metric}')")
            else:
                lines.append(f"REGRESSION {c.method} · {c.metric}: {describe(c)}")
        return lines

    @property
    def whole_units(self) -> set[tuple]:
        """(model, hook, control, method, task) of the baseline with no metric at all in the current run."""
        present = {c.key[:5] for c in self.changes if c.present}
        return {c.key[:5] for c in self.changes} - present

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.source, "current": self.current.source,
            "regressions": len(self.regressions), "notes": self.notes,
            "only_baseline": self.only_baseline, "only_current": self.only_current,
            "changes": [{"model": c.key[0], "hook": c.key[1], "control": c.key[2] or None,
                         "method": c.label or c.key[3], "method_key": c.key[3],
                         "task": c.key[4], "metric": c.key[5], "higher_is_better": c.higher_is_better,
                         "baseline": _json_number(c.baseline), "current": _json_number(c.current), "delta": c.delta,
                         "tolerance": c.tolerance.value, "tolerance_source": c.tolerance.source, "status": c.status,
                         "allowed_by": c.allowed_by}
                        for c in self.changes],
        }


def _json_number(value: float | None) -> float | None:
    """NaN and ±inf are not JSON: None, and the change's status says what it was."""
    return value if _finite(value) else None


def show(value: float | None) -> str:
    """A value for the tables; non-finite values by name (the leaderboard's `fmt` shows NaN as a dash)."""
    if value is not None and not math.isfinite(value):
        return str(value)
    return fmt(value)


def describe(c: Change) -> str:
    """`before → after (which way is better; tolerance …)` for a regression line."""
    return (f"{show(c.baseline)} → {show(c.current)} ({'higher' if c.higher_is_better else 'lower'} is better; "
            f"tolerance {fmt(c.tolerance.value)}, {c.tolerance.source})")


def parse_allowed(items: list[str]) -> list[str]:
    """`--allow-removed` patterns; an empty one is a one-line error."""
    out = [item.strip() for item in items]
    if any(not item for item in out):
        raise BenchError("--allow-removed needs a pattern: method:task.metric, method:task, task.metric or task "
                         "(globs), e.g. --allow-removed 'kmeans:*'")
    return out


def parse_tolerances(items: list[str]) -> dict[str, str]:
    """`["autointerp.*=0.3", "fvu=5%"]` -> patterns; bad syntax is a one-line error."""
    out = {}
    for item in items:
        pattern, sep, value = item.partition("=")
        if not sep or not pattern.strip() or _amount(value, 1.0) is None:
            raise BenchError(f"--tolerance {item!r}: write PATTERN=VALUE, e.g. autointerp.*=0.3 or "
                             "reconstruction.fvu=5%")
        out[pattern.strip()] = value.strip()
    return out


def _amount(value: Any, baseline: float) -> float | None:
    """An absolute tolerance from `0.05`, `"0.05"` or `"10%"` (of |baseline|); None if unreadable."""
    try:
        if isinstance(value, str) and value.strip().endswith("%"):
            return abs(float(value.strip()[:-1]) / 100 * baseline)
        amount = float(value)
    except (TypeError, ValueError):
        return None
    return abs(amount) if math.isfinite(amount) else None


def baseline_tolerances(run: Run) -> dict[str, str]:
    """The baseline directory's `tolerances.json`, if it has one."""
    if run.history_id is not None:
        return {}
    path = Path(run.source) / TOLERANCE_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data.items() if not str(k).startswith("_")}
    except (OSError, ValueError, AttributeError):
        raise BenchError(f"{path} is not a JSON object of PATTERN: VALUE; fix or delete it") from None


class Patterns:
    """PATTERN -> VALUE, tried longest first. The committed file has one literal `method:task.metric` per metric
    (hundreds): those are looked up by name, and only real globs are matched one by one."""

    def __init__(self, patterns: dict[str, str]) -> None:
        self.values = patterns
        ordered = sorted(patterns, key=len, reverse=True)  # stable: equal lengths keep the file's order
        self.rank = {p: i for i, p in enumerate(ordered)}
        self.literal: dict[str, list[str]] = {}
        self.globs: list[str] = []
        for p in ordered:
            if _LITERAL.fullmatch(p):
                self.literal.setdefault(_UNESCAPE.sub(r"\1", p), []).append(p)
            else:
                self.globs.append(p)

    def matching(self, names: tuple[str, ...]) -> list[str]:
        found = [p for n in dict.fromkeys(names) for p in self.literal.get(n, [])]
        found += [p for p in self.globs if any(fnmatchcase(n, p) for n in names)]
        return sorted(set(found), key=self.rank.__getitem__)


_LITERAL = re.compile(r"(?:[^][*?]|\[[][*?]\])*")  # no glob but `[x]`-escaped special characters
_UNESCAPE = re.compile(r"\[([][*?])\]")


def tolerance(change_key: tuple, baseline: float | None, intervals: list[list[float] | None],
              cli: dict[str, str] | Patterns, committed: dict[str, str] | Patterns) -> Tolerance:
    method, task, metric = change_key[3], change_key[4], change_key[5]
    names = (f"{task}.{metric}", f"{method}:{task}.{metric}")
    base = abs(baseline) if _finite(baseline) else 0.0
    for patterns, label in ((cli, "--tolerance"), (committed, TOLERANCE_FILE)):
        patterns = patterns if isinstance(patterns, Patterns) else Patterns(patterns)
        for pattern in patterns.matching(names):
            if (v := _amount(patterns.values[pattern], base)) is not None:
                return Tolerance(v, f"{label} {pattern}")
    default = max(ABS_TOL, REL_TOL * base)
    half = max(_half_widths(intervals), default=0.0)
    return Tolerance(half, "interval") if half > default else Tolerance(default, "default")


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _first_difference(name: str, a: Any, b: Any) -> tuple[str, Any, Any]:
    """Descend into nested settings (task_params.sparse_probing.n_train_prompts) to the first key that differs."""
    while isinstance(a, dict) and isinstance(b, dict):
        key = next((k for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)), None)
        if key is None:
            break
        name, a, b = f"{name}.{key}", a.get(key), b.get(key)
    return name, a, b


def check_comparable(baseline: Run, current: Run) -> list[str]:
    """Raise a one-line `BenchError` naming the first field that differs; returns notes on harmless differences."""
    for name in CONFIG_FIELDS:
        a, b = _get(baseline.config, name), _get(current.config, name)
        if a != b:
            name, a, b = _first_difference(name, a, b)
            raise BenchError(f"the runs are not comparable: config field {name!r} differs ({_short(a)} in the baseline, "
                             f"{_short(b)} now); compare runs made with the same settings")
    for name in RECORD_FIELDS:
        a = {_short(_get(r, name)) for r in baseline.trained if _get(r, name) is not None}
        b = {_short(_get(r, name)) for r in current.trained if _get(r, name) is not None}
        if a and b and a != b:
            raise BenchError(f"the runs are not comparable: {name!r} differs ({', '.join(sorted(a))} in the baseline, "
                             f"{', '.join(sorted(b))} now); compare runs made with the same settings")
    notes = []
    if baseline.config.get("seed") != current.config.get("seed"):
        notes.append(f"seeds differ ({baseline.config.get('seed')} vs {current.config.get('seed')}): changes include "
                     "seed-to-seed noise")
    dtypes = [run.config.get("eval_dtype", "float32") for run in (baseline, current)]
    if dtypes[0] != dtypes[1]:
        notes.append(f"evaluation precision differs ({dtypes[0]} vs {dtypes[1]}, --eval-dtype): changes include its "
                     "rounding, a KL noise floor near 6e-4 nats per token")
    return notes


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "…"


def method_key(record: dict[str, Any]) -> str:
    """The method as compare pairs it: a dense basis at the SAEs' sparsity (`pca@top64`) is `pca@topk`, since its k
    is measured (the SAEs' L0) and moves with them; another seed or code change gives `pca@top62`, the same row."""
    label, k = record["method"], record.get("matched_k")
    return label.replace(f"@top{k}", "@topk", 1) if k is not None else label


def _values(run: Run) -> dict[tuple, tuple[float | None, bool, list[float] | None]]:
    """Every metric of a run by key; values as floats (NaN and ±inf kept, for the status to name), None as None."""
    out = {}
    for r in run.records:
        for name, m in r.get("metrics", {}).items():
            value = m.get("value")
            key = (r["model"], r["hook"], r.get("control") or "", method_key(r), r["task"], name)
            out[key] = (None if value is None else float(value), bool(m.get("higher_is_better")), m.get("interval"))
    return out


def _labels(run: Run) -> dict[tuple, str]:
    """(model, hook, control, method key, task) -> the method label the run wrote."""
    return {(r["model"], r["hook"], r.get("control") or "", method_key(r), r["task"]): r["method"] for r in run.records}


def removal_names(key: tuple) -> tuple[str, ...]:
    """What an `--allow-removed` pattern is matched against (the method as keyed: `pca@topk`, not `pca@top64`)."""
    method, task, metric = key[3], key[4], key[5]
    return f"{method}:{task}.{metric}", f"{method}:{task}", f"{task}.{metric}", task


def compare(baseline: Run, current: Run, cli_tolerances: dict[str, str] | None = None,
            allow_removed: list[str] | None = None) -> Comparison:
    """Every metric of the baseline, in its order, against the current run: missing ones too (a regression unless
    an `allow_removed` glob names them); what only the current run has is listed."""
    notes = check_comparable(baseline, current)
    committed, cli = Patterns(baseline_tolerances(baseline)), Patterns(cli_tolerances or {})
    old, new = _values(baseline), _values(current)
    labels, labels_now = _labels(baseline), _labels(current)
    allow_removed = allow_removed or []
    used: set[str] = set()
    changes = []
    for key, (before, higher, interval) in old.items():
        label = labels[key[:5]]
        if key in new:
            after, _, interval_now = new[key]
            tol = tolerance(key, before, [interval, interval_now], cli, committed)
            changes.append(Change(key, higher, before, after, tol, label=label))
            continue
        tol = tolerance(key, before, [interval], cli, committed)
        allowed = next((p for p in allow_removed if any(fnmatchcase(n, p) for n in removal_names(key))), None)
        if allowed:
            used.add(allowed)
        changes.append(Change(key, higher, before, None, tol, present=False, allowed_by=allowed, label=label))
    notes += [f"--allow-removed {p!r} matched nothing missing" for p in allow_removed if p not in used]
    moved = sorted({f"{labels[u]} → {labels_now[u]}" for u in labels if labels_now.get(u, labels[u]) != labels[u]})
    if moved:
        notes.append(f"matched k differs (dense bases at the SAEs' L0), compared as the same rows: {', '.join(moved)}")

    def units(keys) -> list[str]:
        return list(dict.fromkeys(f"{k[3]}{f' [{k[2]}]' if k[2] else ''} · {k[4]}" for k in keys))

    result = Comparison(baseline, current, changes, only_current=units(k for k in new if k not in old), notes=notes)
    result.only_baseline = units(k for k in old if k[:5] in result.whole_units)
    return result


def _round_up(x: float) -> float:
    """x to 3 significant digits, never below x (a tolerance must cover what was measured)."""
    step = 10.0 ** (math.floor(math.log10(x)) - 2)
    return float(f"{math.ceil(x / step - 1e-9) * step:.3g}")


def spread_tolerances(a: Run, b: Run, factor: float = 2.0) -> dict[str, Any]:
    """Two runs that differ only by seed -> a `tolerances.json`: for every `method:task.metric` with a finite value
    on both sides, max(factor × |Δ between the seeds|, the wider 95% interval half-width of the two runs, the
    default max(ABS_TOL, REL_TOL × |a|)); controls and hooks of one method share the entry (the largest).
    `_measured` keeps the seed delta and half-width behind each entry, `_why` how the file was made. Metrics
    without a finite value on both sides are left to the rules."""
    check_comparable(a, b)
    seeds = (a.config.get("seed"), b.config.get("seed"))
    if seeds[0] == seeds[1]:
        raise BenchError(f"--write-tolerances measures the seed-to-seed spread, but both runs have seed {seeds[0]}; "
                         "pass two runs made with different --seed")
    old, new = _values(a), _values(b)
    # Metrics whose every value (any method, either run) lies in [0, 1]: AUROCs, accuracies, fractions.
    unit_range: dict[str, bool] = {}
    for values in (old, new):
        for key, (value, _, _) in values.items():
            if _finite(value):
                name = f"{key[4]}.{key[5]}"
                unit_range[name] = unit_range.get(name, True) and 0.0 <= value <= 1.0
    out: dict[str, float] = {}
    measured: dict[str, dict[str, float]] = {}
    for key, (before, _, interval) in old.items():
        after, _, interval_now = new.get(key, (None, False, None))
        if not (_finite(before) and _finite(after)):
            continue
        label = re.sub(r"([][*?])", r"[\1]", f"{key[3]}:{key[4]}.{key[5]}")  # a literal label, not a glob
        delta, half = abs(after - before), max(_half_widths([interval, interval_now]), default=0.0)
        value = _round_up(max(factor * delta, half, ABS_TOL, REL_TOL * abs(before)))
        capped = unit_range.get(f"{key[4]}.{key[5]}", False) and value > UNIT_CAP
        if capped:
            # The sample is too small for its seed spread to bound anything on a [0, 1] scale (a band wider than
            # the scale cannot fail). Same seed, same platform reproduces the baseline bit for bit, so the cap can
            # only trip on a change of code: one that moves a number this much must refresh the baseline.
            value = UNIT_CAP
        if value >= out.get(label, 0.0):
            out[label] = value
            measured[label] = {"seed_delta": float(f"{delta:.4g}"), "half_width": float(f"{half:.4g}"),
                               **({"capped": True} if capped else {})}
    why = (f"made by `python -m bench compare RUN_SEED{seeds[0]} RUN_SEED{seeds[1]} --write-tolerances FILE` from "
           f"two runs of preset {a.config.get('preset')!r} that differ only by seed ({seeds[0]}, {seeds[1]}; commits "
           f"{(a.git_commit or '?')[:10]}, {(b.git_commit or '?')[:10]}; {a.env.get('threads') or '?'} threads, "
           f"{a.env.get('platform') or '?'}): per method:task.metric, max({factor:g} x "
           f"|seed {seeds[0]} - seed {seeds[1]}|, the wider 95% interval half-width of the two runs, "
           f"max({ABS_TOL}, {REL_TOL:.0%} of |value|)), at most {UNIT_CAP} for metrics on a [0, 1] scale (`capped` in "
           "`_measured`: their seed spread at this size exceeds what could fail); `_measured` holds the seed delta "
           "and half-width behind each entry (docs/reports.md, CI)")
    return {"_why": why, **dict(sorted(out.items())), "_measured": dict(sorted(measured.items()))}


def _half_widths(intervals: list[Any]) -> list[float]:
    """Half-widths of the well-formed, finite intervals among `[lo, hi]` or None."""
    return [abs(i[1] - i[0]) / 2 for i in intervals
            if isinstance(i, (list, tuple)) and len(i) >= 2
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in i[:2])]


def markdown(comparison: Comparison, everything: bool = False) -> str:
    """The table (regressions first; with `everything`, every metric, else only those that moved past tolerance)."""
    rows = _rows(comparison, everything)
    out = [f"# compare: {comparison.baseline.name} → {comparison.current.name}\n",
           f"{_summary(comparison)}.\n"]
    if rows:
        out += ["| status | method | metric | baseline | current | Δ | tolerance |", "|---|---|---|---|---|---|---|"]
        out += [f"| {f'**{status}**' if status in REGRESSED else status} | `{method}` | " + " | ".join(rest) + " |"
                for status, method, *rest in rows]
    out += [""] + [f"- {n}" for n in _extra_notes(comparison)]
    return "\n".join(out) + "\n"


def rich_table(comparison: Comparison, everything: bool = False):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"compare: {comparison.baseline.name} → {comparison.current.name}: {_summary(comparison)}"),
                  caption=escape("\n".join(_extra_notes(comparison))), caption_justify="left")
    for name in ("status", "method", "metric", "baseline", "current", "Δ", "tolerance"):
        table.add_column(name, justify="right" if name in {"baseline", "current", "Δ", "tolerance"} else "left")
    style = {"regressed": "bold red", "lost": "bold red", "missing": "bold red", "improved": "green"}
    for status, *cells in _rows(comparison, everything):
        s = style.get(status)
        table.add_row(f"[{s}]{status}[/]" if s else status, *(escape(cell) for cell in cells))
    return table


def _rows(comparison: Comparison, everything: bool) -> list[tuple[str, ...]]:
    """(status, method, metric, baseline, current, Δ, tolerance) as text, regressions first; a result missing as a
    whole is one row."""
    rank = {"regressed": 0, "lost": 0, "missing": 0, "improved": 1, "gained": 1, "removed": 1, "ok": 2, "none": 3}
    quiet = set() if everything else {"ok", "none"}
    whole, rows, done = comparison.whole_units, [], set()
    for c in sorted(comparison.changes, key=lambda c: rank[c.status]):
        if c.status in quiet:
            continue
        unit = c.key[:5]
        if not c.present and unit in whole:
            if unit in done:
                continue
            done.add(unit)
            n = sum(d.key[:5] == unit for d in comparison.changes)
            note = f"allowed by {c.allowed_by}" if c.allowed_by else "the whole result"
            rows.append((c.status, c.method, f"{c.key[4]}.* ({n} metrics)", "", "–", "", note))
            continue
        tol = f"allowed by {c.allowed_by}" if c.allowed_by else f"{fmt(c.tolerance.value)} ({c.tolerance.source})"
        rows.append((c.status, c.method, f"{c.metric} {'↑' if c.higher_is_better else '↓'}", show(c.baseline),
                     show(c.current) if c.present else "–", signed(c.delta), tol))
    return rows


def _summary(comparison: Comparison) -> str:
    n, moved = len(comparison.regressions), sum(c.status == "improved" for c in comparison.changes)
    removed = sum(c.status == "removed" for c in comparison.changes)
    return (f"{n} regression{'s' if n != 1 else ''}, {moved} improved past tolerance, "
            f"{len(comparison.changes)} metrics compared" + (f", {removed} removed as allowed" if removed else ""))


def _extra_notes(comparison: Comparison) -> list[str]:
    notes = list(comparison.notes)
    for label, items in (("missing in the current run", comparison.only_baseline),
                         ("only in the current run", comparison.only_current)):
        if items:
            shown = ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")
            notes.append(f"{label}: {shown}")
    notes.append(f"baseline {comparison.baseline.display_source} (commit {(comparison.baseline.git_commit or '?')[:10]}), "
                 f"current {comparison.current.display_source} (commit {(comparison.current.git_commit or '?')[:10]})")
    return notes
