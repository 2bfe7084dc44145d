"""Runs as reports read them: a run directory (or a history entry) with its configuration and result records.

A run directory holds `config.json` (the `RunConfig` plus environment: versions, git commit, start time),
`results/*.json` (one record per model × hook × method × task) and, with `--control`, `controls/<name>/results/`.
Reports, `compare` and the history all start from a `Run`, whichever of the two places it came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.io import fingerprint
from bench.results import SCHEMA, redact_record


@dataclass
class Run:
    """One run's records (trained side and controls) with its configuration and environment.

    `config` is the `RunConfig` as a dict; `env` holds `versions`, `git_commit`, `started` (what config.json
    holds beside the config); `method_order` is the order the run's own leaderboard listed methods in.
    """

    name: str
    source: str  # the directory, or "history #<id>"
    config: dict[str, Any]
    env: dict[str, Any]
    records: list[dict[str, Any]]
    method_order: list[str] = field(default_factory=list)
    history_id: int | None = None

    @property
    def slug(self) -> str:
        """A file-name-safe id, stable for a given source (an HTML page name)."""
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.name)[:60]
        return f"{safe}-{fingerprint(self.source, 6)}"

    @property
    def display_source(self) -> str:
        """`source` as pages show it: relative to the directory the report is made in, so that a published report
        does not carry the absolute path (home directory, user name); absolute where the two share only the
        filesystem root (or are on different drives), where climbing out with ../../.. would read worse."""
        if self.history_id is not None:
            return self.source
        return display_path(self.source)

    @property
    def git_commit(self) -> str | None:
        return self.env.get("git_commit")

    @property
    def started(self) -> str | None:
        return self.env.get("started") or min((r.get("created", "") for r in self.records), default=None) or None

    @property
    def config_fingerprint(self) -> str:
        return fingerprint(self.config)

    @cached_property
    def boards(self) -> list:
        """The leaderboards of the trained side, built once (rank groups cost bootstrap tests)."""
        from reports.leaderboard import build_leaderboards

        return build_leaderboards(self.trained, self.method_order)

    @property
    def trained(self) -> list[dict[str, Any]]:
        """Records of the trained model (not of a control)."""
        return [r for r in self.records if r.get("control") is None]


def load_run(path: Path | str) -> Run:
    """Read a run directory; a one-line `BenchError` when it is not one."""
    root = Path(path)
    if not root.is_dir():
        raise BenchError(f"{root}: no such run directory; pass the --out of a `python -m bench run`")
    files = sorted(root.glob("results/*.json")) + sorted(root.glob("controls/*/results/*.json"))
    board = _json(root / "leaderboard.json")
    # In the order of the run's own leaderboard (tasks as its columns, methods as its rows), so that tables and plots
    # come out as the run showed them; else by time (tasks run one after the other).
    tasks = list(dict.fromkeys(c["task"] for b in board.get("boards", []) for c in b.get("columns", [])))
    methods = list(dict.fromkeys(row["method"] for b in board.get("boards", []) for row in b.get("rows", [])))
    task_rank, method_rank = ({x: i for i, x in enumerate(xs)} for xs in (tasks, methods))
    records = sorted((r for p in files if (r := _record(p, root)) is not None),
                     key=lambda r: (task_rank.get(r.get("task"), len(task_rank)),
                                    method_rank.get(r.get("method"), len(method_rank)), r.get("created", "")))
    if not records:
        raise BenchError(f"{root}: no result files under {root}/results; pass the --out of a finished "
                         "`python -m bench run`")
    meta = redact_record(_json(root / "config.json"))  # a run made before redaction may hold a judge password
    config = meta.pop("config", None) or records[0].get("config", {})
    env = {k: meta.get(k, records[0].get(k)) for k in ("versions", "git_commit", "threads", "platform")}
    env["started"] = meta.get("started")
    order = [m.split("@")[0].split("[")[0] for m in methods]
    return Run(root.name, str(root.resolve()), config, env, records, list(dict.fromkeys(order)))


# What every report reads from a record: identity strings, and metrics as name -> {"value", "higher_is_better"}.
_REQUIRED = ("model", "hook", "method", "task", "metrics")


def _record(path: Path, root: Path) -> dict[str, Any] | None:
    """The record in `path`, redacted; None for another schema version (as `read_result`). A damaged file, or one
    without a field every report needs, is a one-line error naming the file: left out, it would silently drop a
    row from the tables."""
    fix = f"delete it and rerun `python -m bench run` with --out {root} to recompute it"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BenchError(f"{path} is not a readable result file ({type(e).__name__}); {fix}") from None
    if not isinstance(record, dict):
        raise BenchError(f"{path} is not a result record (not a JSON object); {fix}")
    if record.get("schema") != SCHEMA:
        return None
    for name in _REQUIRED:
        if name not in record:
            raise BenchError(f"{path}: the result record has no field {name!r}; {fix}")
        if not isinstance(record[name], dict if name == "metrics" else str):
            raise BenchError(f"{path}: the result record's field {name!r} is not a "
                             f"{'JSON object' if name == 'metrics' else 'string'}; {fix}")
    for metric, m in record["metrics"].items():
        if not (isinstance(m, dict) and "value" in m and "higher_is_better" in m):
            raise BenchError(f"{path}: metric {metric!r} lacks 'value' or 'higher_is_better'; {fix}")
    return redact_record(record)


def display_path(path: str | Path) -> str:
    """`path` relative to the working directory, or absolute where they share nothing below the root."""
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    try:
        common = os.path.commonpath([absolute, cwd])
    except ValueError:  # different drives (Windows)
        return absolute
    if common == os.path.dirname(common):  # only the root (or drive) in common
        return absolute
    return os.path.relpath(absolute, cwd)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
