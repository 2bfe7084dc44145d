"""Score regressions: every metric of a current run against a baseline, flagged when it moves the bad way.

`python -m bench compare BASELINE CURRENT` exits 1 when any (model, hook, control, method, task, metric) got worse
by more than its tolerance, 0 otherwise, 2 when the runs cannot be compared (a missing run, or a setting that
changes what the numbers mean: the error names the field).

Tolerance of a metric, first that applies:
1. `--tolerance PATTERN=VALUE` on the command line;
2. the baseline directory's `tolerances.json` (`{"PATTERN": VALUE}`; e.g. a wider band for a noisy judge, or the
   seed-to-seed spread that `compare SEED_A SEED_B --write-tolerances FILE` measures);
3. max(the half-width of the 95% interval the task reported, baseline or current; the default below).
The default is max(`ABS_TOL`, `REL_TOL` × |baseline|). PATTERN is a glob over `task.metric` or
`method:task.metric` (e.g. `autointerp.*`, `sae-topk:reconstruction.fvu`); VALUE is absolute (`0.05`) or relative
to the baseline (`10%`). Patterns are tried most specific first (the longest).
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
REL_TOL = 0.05
TOLERANCE_FILE = "tolerances.json"

# RunConfig fields that change what a number means; a difference makes two runs incomparable. Left out on purpose:
# methods and tasks (a method or task on one side only is listed, not an error), seed (a seed-to-seed comparison is
# legitimate), device, harvest_batch, and the judge's transport settings (concurrency, timeouts, threads, cache).
CONFIG_FIELDS = ("model", "preset", "text", "ctx_len", "train_contexts", "eval_contexts", "exclusion", "matched_k",
                 "method_params", "task_params", "judge.judge", "judge.base_url", "judge.model")
# Per-record identity that must agree too: where the activations came from.
RECORD_FIELDS = ("hook", "activations.model_fingerprint", "activations.corpus", "activations.ctx_len")


@dataclass(frozen=True)
class Tolerance:
    value: float  # absolute, in the metric's units
    source: str  # "--tolerance …", "tolerances.json …", "interval", "default"


@dataclass(frozen=True)
class Change:
    """One metric of one (model, hook, control, method, task) on both sides."""

    key: tuple[str, str, str, str, str, str]  # model, hook, control ('' = trained), method, task, metric
    higher_is_better: bool
    baseline: float | None
    current: float | None
    tolerance: Tolerance

    @property
    def method(self) -> str:
        return self.key[3] if not self.key[2] else f"{self.key[3]} [{self.key[2]}]"

    @property
    def metric(self) -> str:
        return f"{self.key[4]}.{self.key[5]}"

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
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
        """regressed | improved | ok | lost (a value became none) | gained | none (no value on either side)."""
        if self.baseline is None:
            return "gained" if self.current is not None else "none"
        if self.current is None:
            return "lost"
        worse = self.worse_by
        if worse > self.tolerance.value:
            return "regressed"
        return "improved" if -worse > self.tolerance.value else "ok"

    @property
    def regressed(self) -> bool:
        return self.status in {"regressed", "lost"}


@dataclass
class Comparison:
    baseline: Run
    current: Run
    changes: list[Change]
    only_baseline: list[str] = field(default_factory=list)  # "method · task" with metrics on one side only
    only_current: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regressed]

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.source, "current": self.current.source,
            "regressions": len(self.regressions), "notes": self.notes,
            "only_baseline": self.only_baseline, "only_current": self.only_current,
            "changes": [{"model": c.key[0], "hook": c.key[1], "control": c.key[2] or None, "method": c.key[3],
                         "task": c.key[4], "metric": c.key[5], "higher_is_better": c.higher_is_better,
                         "baseline": c.baseline, "current": c.current, "delta": c.delta,
                         "tolerance": c.tolerance.value, "tolerance_source": c.tolerance.source, "status": c.status}
                        for c in self.changes],
        }


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


def tolerance(change_key: tuple, baseline: float | None, intervals: list[list[float] | None],
              cli: dict[str, str], committed: dict[str, str]) -> Tolerance:
    method, task, metric = change_key[3], change_key[4], change_key[5]
    names = (f"{task}.{metric}", f"{method}:{task}.{metric}")
    base = abs(baseline) if baseline is not None else 0.0
    for patterns, label in ((cli, "--tolerance"), (committed, TOLERANCE_FILE)):
        for pattern in sorted(patterns, key=len, reverse=True):
            if any(fnmatchcase(n, pattern) for n in names) and (v := _amount(patterns[pattern], base)) is not None:
                return Tolerance(v, f"{label} {pattern}")
    default = max(ABS_TOL, REL_TOL * base)
    half = max((abs(i[1] - i[0]) / 2 for i in intervals if i and None not in i[:2]), default=0.0)
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
    return notes


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "…"


def _values(run: Run) -> dict[tuple, tuple[float | None, bool, list[float] | None]]:
    out = {}
    for r in run.records:
        for name, m in r.get("metrics", {}).items():
            value = m.get("value")
            value = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
            key = (r["model"], r["hook"], r.get("control") or "", r["method"], r["task"], name)
            out[key] = (value, bool(m.get("higher_is_better")), m.get("interval"))
    return out


def compare(baseline: Run, current: Run, cli_tolerances: dict[str, str] | None = None) -> Comparison:
    """Every metric present on both sides, in the baseline's order; what only one side has is listed."""
    notes = check_comparable(baseline, current)
    committed = baseline_tolerances(baseline)
    old, new = _values(baseline), _values(current)
    changes = []
    for key, (before, higher, interval) in old.items():
        if key not in new:
            continue
        after, _, interval_now = new[key]
        tol = tolerance(key, before, [interval, interval_now], cli_tolerances or {}, committed)
        changes.append(Change(key, higher, before, after, tol))

    def units(keys) -> list[str]:
        return list(dict.fromkeys(f"{k[3]}{f' [{k[2]}]' if k[2] else ''} · {k[4]}" for k in keys))

    return Comparison(baseline, current, changes, units(k for k in old if k not in new),
                      units(k for k in new if k not in old), notes)


def spread_tolerances(a: Run, b: Run, factor: float = 2.0) -> dict[str, float]:
    """Two runs that differ only by seed -> `{"method:task.metric": factor × |Δ|}` where that exceeds the default:
    the seed-to-seed spread as tolerances, to commit beside a baseline as `tolerances.json`."""
    out = {}
    for c in compare(a, b).changes:
        if c.delta is not None and factor * abs(c.delta) > max(ABS_TOL, REL_TOL * abs(c.baseline)):
            key = re.sub(r"([][*?])", r"[\1]", f"{c.key[3]}:{c.metric}")  # a literal label, not a glob
            out[key] = max(out.get(key, 0.0), float(f"{factor * abs(c.delta):.3g}"))
    return out


def markdown(comparison: Comparison, everything: bool = False) -> str:
    """The table (regressions first; with `everything`, every metric, else only those that moved past tolerance)."""
    rows = _ordered(comparison, everything)
    out = [f"# compare: {comparison.baseline.name} → {comparison.current.name}\n",
           f"{_summary(comparison)}.\n"]
    if rows:
        out += ["| status | method | metric | baseline | current | Δ | tolerance |", "|---|---|---|---|---|---|---|"]
        out += [f"| {_mark(c)} | `{c.method}` | {c.metric} {'↑' if c.higher_is_better else '↓'} | {fmt(c.baseline)} "
                f"| {fmt(c.current)} | {signed(c.delta)} | {fmt(c.tolerance.value)} ({c.tolerance.source}) |"
                for c in rows]
    out += [""] + [f"- {n}" for n in _extra_notes(comparison)]
    return "\n".join(out) + "\n"


def rich_table(comparison: Comparison, everything: bool = False):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"compare: {comparison.baseline.name} → {comparison.current.name}: {_summary(comparison)}"),
                  caption=escape("\n".join(_extra_notes(comparison))), caption_justify="left")
    for name in ("status", "method", "metric", "baseline", "current", "Δ", "tolerance"):
        table.add_column(name, justify="right" if name in {"baseline", "current", "Δ", "tolerance"} else "left")
    style = {"regressed": "bold red", "lost": "bold red", "improved": "green"}
    for c in _ordered(comparison, everything):
        s = style.get(c.status)
        table.add_row(f"[{s}]{c.status}[/]" if s else c.status, escape(c.method),
                      escape(f"{c.metric} {'↑' if c.higher_is_better else '↓'}"), fmt(c.baseline), fmt(c.current),
                      signed(c.delta), escape(f"{fmt(c.tolerance.value)} ({c.tolerance.source})"))
    return table


def _summary(comparison: Comparison) -> str:
    n, moved = len(comparison.regressions), sum(c.status == "improved" for c in comparison.changes)
    return (f"{n} regression{'s' if n != 1 else ''}, {moved} improved past tolerance, "
            f"{len(comparison.changes)} metrics compared")


def _ordered(comparison: Comparison, everything: bool) -> list[Change]:
    rank = {"regressed": 0, "lost": 0, "improved": 1, "gained": 1, "ok": 2, "none": 3}
    rows = comparison.changes if everything else [c for c in comparison.changes if c.status not in {"ok", "none"}]
    return sorted(rows, key=lambda c: rank[c.status])


def _extra_notes(comparison: Comparison) -> list[str]:
    notes = list(comparison.notes)
    for label, items in (("only in the baseline", comparison.only_baseline), ("only now", comparison.only_current)):
        if items:
            shown = ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")
            notes.append(f"{label}: {shown}")
    notes.append(f"baseline {comparison.baseline.source} (commit {(comparison.baseline.git_commit or '?')[:10]}), "
                 f"current {comparison.current.source} (commit {(comparison.current.git_commit or '?')[:10]})")
    return notes


def _mark(c: Change) -> str:
    return f"**{c.status}**" if c.regressed else c.status


