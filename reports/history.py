"""The results history: every finished run's metrics in one SQLite file, for trends across commits.

`python -m bench run` appends its run at the end (`record_run`); `python -m bench history` reads it back. The file
is `$DECOMPBENCH_HISTORY`, else `<cache>/history.sqlite` (`bench.paths.cache_dir`); `DECOMPBENCH_HISTORY=off`
turns recording off. Appending is idempotent: a run is keyed by its directory's absolute path and each metric by
(run, model, hook, control, method, task, metric), so a resumed run replaces its rows instead of adding to them.

Tables: `runs` (id, source, name, git commit, config fingerprint, config, versions, started, appended) and
`metrics` (one row per run × record × metric: value, direction, interval).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.paths import cache_dir
from bench.io import fingerprint
from bench.results import now, redact_record
from reports.runs import Run, load_run

ENV = "DECOMPBENCH_HISTORY"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    source TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    git_commit TEXT,
    config_fingerprint TEXT NOT NULL,
    preset TEXT,
    config TEXT NOT NULL,
    env TEXT NOT NULL,
    started TEXT,
    appended TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    model TEXT NOT NULL, hook TEXT NOT NULL, control TEXT NOT NULL, method TEXT NOT NULL,
    task TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, higher_is_better INTEGER NOT NULL, lo REAL, hi REAL,
    record TEXT NOT NULL,
    PRIMARY KEY (run_id, model, hook, control, method, task, metric)
);
"""
# What of a record the history keeps besides its metrics (enough for leaderboards and `compare`; details are not kept).
_KEEP = ("model", "hook", "control", "method", "method_name", "method_params", "sparse", "matched_k", "task",
         "task_name", "judge", "activations", "git_commit", "created")


def default_path() -> Path | None:
    """Where the history lives; None when recording is off."""
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in {"", "off", "0", "no"} else Path(env).expanduser()
    return cache_dir() / "history.sqlite"


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30)
    db.executescript(_SCHEMA)
    return db


def append(path: Path, run: Run) -> int:
    """Add (or refresh) `run` in the history at `path`; returns its history id. URLs in what is stored have their
    credentials redacted (`redact_record`): a judge's `--llm-base-url` may hold a password."""
    config, env = redact_record(run.config), redact_record(run.env)
    with closing(_connect(path)) as db, db:
        db.execute(
            "INSERT INTO runs (source, name, git_commit, config_fingerprint, preset, config, env, started, appended) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(source) DO UPDATE SET name=excluded.name, "
            "git_commit=excluded.git_commit, config_fingerprint=excluded.config_fingerprint, preset=excluded.preset, "
            "config=excluded.config, env=excluded.env, started=excluded.started, appended=excluded.appended",
            (run.source, run.name, run.git_commit, fingerprint(config), config.get("preset"),
             json.dumps(config, sort_keys=True), json.dumps(env, sort_keys=True), run.started, now()))
        (run_id,) = db.execute("SELECT id FROM runs WHERE source = ?", (run.source,)).fetchone()
        rows = []
        for rec in run.records:
            kept = json.dumps(redact_record({k: rec.get(k) for k in _KEEP}), sort_keys=True)
            for name, m in rec.get("metrics", {}).items():
                lo, hi = (m.get("interval") or (None, None))[:2]
                rows.append((run_id, rec["model"], rec["hook"], rec.get("control") or "", rec["method"], rec["task"],
                             name, m.get("value"), int(bool(m.get("higher_is_better"))), lo, hi, kept))
        db.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return run_id


def record_run(out: Path, console=None) -> int | None:
    """Append the run directory `out` to the default history; a failure warns and never fails the run."""
    path = default_path()
    if path is None:
        return None
    try:
        return append(path, load_run(out))
    except (sqlite3.Error, OSError, BenchError) as e:
        if console is not None:
            console.print(f"[yellow]warning:[/] the run was not added to the history {path} ({e})", highlight=False)
        return None


def _open(path: Path | None) -> sqlite3.Connection:
    if path is None:
        raise BenchError(f"recording is off ({ENV}=off); pass --history PATH")
    if not Path(path).is_file():
        raise BenchError(f"no history at {path}: run `python -m bench run` first, or pass --history PATH")
    try:
        db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        db.execute("SELECT id FROM runs LIMIT 1")
    except sqlite3.Error as e:
        raise BenchError(f"{path} is not a decompbench history ({e}); pass another --history PATH") from None
    return db


@dataclass(frozen=True)
class Entry:
    """A run in the history."""

    id: int
    name: str
    source: str
    git_commit: str | None
    config_fingerprint: str
    preset: str | None
    started: str | None
    n_metrics: int


def runs(path: Path | None) -> list[Entry]:
    """Every run in the history, oldest first."""
    with closing(_open(path)) as db:
        rows = db.execute("SELECT r.id, r.name, r.source, r.git_commit, r.config_fingerprint, r.preset, r.started, "
                          "COUNT(m.metric) FROM runs r LEFT JOIN metrics m ON m.run_id = r.id GROUP BY r.id "
                          "ORDER BY r.started, r.id").fetchall()
    return [Entry(*row) for row in rows]


def load(path: Path | None, run_id: int) -> Run:
    """A history entry as a `Run` (records hold metrics and identity, not details)."""
    with closing(_open(path)) as db:
        row = db.execute("SELECT name, source, config, env FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise BenchError(f"no run #{run_id} in the history {path}; `python -m bench history` lists them")
        metrics = db.execute("SELECT model, hook, control, method, task, metric, value, higher_is_better, lo, hi, "
                             "record FROM metrics WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall()
    records: dict[tuple, dict[str, Any]] = {}
    for model, hook, control, method, task, metric, value, higher, lo, hi, kept in metrics:
        rec = records.setdefault((model, hook, control, method, task), {**json.loads(kept), "metrics": {}})
        rec["metrics"][metric] = {"value": value, "higher_is_better": bool(higher),
                                  "interval": [lo, hi] if lo is not None else None}
    name, source, config, env = row
    return Run(name, f"history #{run_id}", json.loads(config), json.loads(env), list(records.values()),
               history_id=run_id)


@dataclass(frozen=True)
class Point:
    """One run's value of a metric for one method."""

    run_id: int
    started: str | None
    git_commit: str | None
    preset: str | None
    method: str
    value: float | None
    interval: tuple[float, float] | None


def trend(path: Path | None, metric: str, method: str | None = None, model: str | None = None,
          hook: str | None = None) -> list[Point]:
    """`task.metric` across the history, oldest run first, trained model only; `method` filters by label."""
    task, _, name = metric.rpartition(".")
    if not task:
        raise BenchError(f"name the metric as task.metric, e.g. reconstruction.fvu (got {metric!r})")
    sql = ("SELECT r.id, r.started, r.git_commit, r.preset, m.method, m.value, m.lo, m.hi FROM metrics m "
           "JOIN runs r ON r.id = m.run_id WHERE m.task = ? AND m.metric = ? AND m.control = ''")
    args: list[Any] = [task, name]
    for column, value in (("method", method), ("model", model), ("hook", hook)):
        if value is not None:
            sql += f" AND m.{column} = ?"
            args.append(value)
    with closing(_open(path)) as db:
        rows = db.execute(sql + " ORDER BY r.started, r.id, m.method", args).fetchall()
    if not rows:
        raise BenchError(f"no values of {metric} in the history {path}; `python -m bench history` lists the runs")
    return [Point(i, s, g, p, m, v, (lo, hi) if lo is not None else None) for i, s, g, p, m, v, lo, hi in rows]


def series(points: list[Point]) -> dict[str, list[Point]]:
    """Points by method (by method and preset when the history mixes presets: their numbers do not compare)."""
    presets = {p.preset for p in points}
    out: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        out[p.method if len(presets) < 2 else f"{p.method} ({p.preset})"].append(p)
    return dict(out)


def resolve(arg: str, path: Path | None) -> Run:
    """A run directory, or a history id (`7` or `#7`) from the history at `path`."""
    if Path(arg).is_dir():
        return load_run(arg)
    if re.fullmatch(r"#?\d+", arg.strip()):
        return load(path, int(arg.strip().lstrip("#")))
    raise BenchError(f"{arg}: no such run directory or history id; pass a run's --out, or an id that "
                     "`python -m bench history` lists")
