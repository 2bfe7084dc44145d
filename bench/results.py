"""Result files: one JSON per (model, hook, method, task), written atomically, read back for resume and reports."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.io import atomic_write_json
from bench.judge.base import redact_url

SCHEMA = "decompbench.result/1"
_PACKAGES = ("decompbench", "torch", "transformers", "transformer-lens", "scikit-learn", "numpy", "safetensors",
             "python-picard")


def environment() -> dict[str, Any]:
    import torch  # here, not at the top: reports read results without loading torch

    versions = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"versions": versions, "git_commit": git_commit(), "threads": torch.get_num_threads(),
            "platform": platform.platform()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,@+-]+", "_", part).strip("_")


def result_path(out: Path, model: str, hook: str, method: str, task: str) -> Path:
    return Path(out) / "results" / f"{_safe(model)}__{_safe(hook)}__{_safe(method)}__{_safe(task)}.json"


def write_result(path: Path, record: dict[str, Any]) -> None:
    atomic_write_json(path, {"schema": SCHEMA, **redact_record(record)})


def read_result(path: Path) -> dict[str, Any] | None:
    """A finished result, or None if absent. A corrupt file is treated as absent (it will be recomputed)."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("schema") == SCHEMA else None


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def redact_record(obj: Any) -> Any:
    """A copy of `obj` (a result record, a run config: any JSON-like value) in which every URL inside a string has
    its credentials replaced by `***` (`bench.judge.base.redact_url`): user:password, and query parameters named
    like a key or token. Call it on whatever is written or printed from a config: `--llm-base-url` may carry a
    password. Strings without "://" are returned as they are."""
    if isinstance(obj, str):
        return _URL.sub(lambda m: redact_url(m.group(0)), obj) if "://" in obj else obj
    if isinstance(obj, dict):
        return {k: redact_record(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_record(v) for v in obj]
    return obj

