"""Where decompbench keeps converted models and harvested activations."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$DECOMPBENCH_CACHE`, else `$XDG_CACHE_HOME/decompbench`, else `~/.cache/decompbench`."""
    if env := os.environ.get("DECOMPBENCH_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "decompbench"
