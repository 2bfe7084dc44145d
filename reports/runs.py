"""Runs as reports read them: a run directory (or a history entry) with its configuration and result records.

A run directory holds `config.json` (the `RunConfig` plus environment: versions, git commit, start time),
`results/*.json` (one record per model × hook × method × task) and, with `--control`, `controls/<name>/results/`.
Reports, `compare` and the history all start from a `Run`, whichever of the two places it came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.io import fingerprint
from bench.results import read_result


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
    records = sorted((r for p in files if (r := read_result(p)) is not None),
                     key=lambda r: (task_rank.get(r.get("task"), len(task_rank)),
                                    method_rank.get(r.get("method"), len(method_rank)), r.get("created", "")))
    if not records:
        raise BenchError(f"{root}: no result files under {root}/results; pass the --out of a finished "
                         "`python -m bench run`")
    meta = _json(root / "config.json")
    config = meta.pop("config", None) or records[0].get("config", {})
    env = {k: meta.get(k, records[0].get(k)) for k in ("versions", "git_commit", "threads", "platform")}
    env["started"] = meta.get("started")
    order = [m.split("@")[0].split("[")[0] for m in methods]
    return Run(root.name, str(root.resolve()), config, env, records, list(dict.fromkeys(order)))


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
