"""Shared by the report tests: the committed smoke baseline (real result files), copied and edited per test."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

from tests.cli_helpers import ROOT, bench_in_process, bench_subprocess

BASELINE = ROOT / "baselines" / "smoke"
# Untrusted text as the corpus or a judge could produce it: it must render as text and never run.
PAYLOAD = "<script>window.__pwned = 1; document.title = 'pwned'</script>"
ONERROR = "<img src=x onerror=\"window.__pwned = 2; document.title = 'pwned'\">"


def copy_run(dst: Path) -> Path:
    shutil.copytree(BASELINE, dst)
    return dst


def edit_result(run: Path, method: str, task: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """Apply `edit` to the record of (method, task) in the run directory `run`, in place."""
    ((path, record),) = [(p, r) for p in (run / "results").glob("*.json")
                         if (r := json.loads(p.read_text()))["method"] == method and r["task"] == task]
    edit(record)
    path.write_text(json.dumps(record))
    return path


def inject(record: dict[str, Any]) -> None:
    """Put the payloads into the first autointerp feature's explanation and top context."""
    feature = record["details"]["features"][0]
    feature["explanation"] = f"fires on {ONERROR} and {PAYLOAD}"
    feature["explain_excerpts"][0] = f"before {PAYLOAD} <<{ONERROR}>> after"


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m bench ARGS` run through `bench.cli.main` in this process (tests/cli_helpers.py)."""
    return bench_in_process(*args, env=env, columns="200")


def bench_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m bench ARGS` in a subprocess: the real interpreter's exit status."""
    return bench_subprocess(*args, env=env, columns="200", timeout=120)
