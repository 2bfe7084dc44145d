"""What a Ray worker process runs: one unit, with one `Workspace` kept per process (imports no Ray itself).

The workspace is the one piece of process state: a worker that evaluates many rows of one task loads the model
and prepares the task once. It is keyed by the run, so a worker reused for another run starts afresh.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from bench.config import RunConfig
from bench.device import set_threads
from bench.io import fingerprint
from bench.worker import Workspace

# Test-only fault injection (tests/test_ray.py): the first attempt of a unit whose name contains the first
# variable's value writes its pid to the file the second names, then sleeps until it is killed.
HANG_UNIT = "DECOMPBENCH_TEST_HANG_UNIT"
HANG_PID_FILE = "DECOMPBENCH_TEST_HANG_PID_FILE"
KEEP_PREPARED = 2  # prepared tasks a worker keeps (loss_recovered's clean logits are the largest)

_workspace: dict[str, Workspace] = {}


def workspace(cfg: RunConfig, out: Path) -> Workspace:
    key = fingerprint({"cfg": repr(cfg), "out": str(out)})
    if key not in _workspace:
        for old in _workspace.values():
            old.close()
        _workspace.clear()
        _workspace[key] = Workspace(cfg, out, keep_prepared=KEEP_PREPARED)
    return _workspace[key]


def _hang_if_asked(name: str) -> None:
    target, pid_file = os.environ.get(HANG_UNIT), os.environ.get(HANG_PID_FILE)
    if not target or not pid_file or target not in name:
        return
    path = Path(pid_file)
    first = not path.exists()
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    if first:
        time.sleep(600)


def run_unit(cfg: RunConfig, out: str, threads: int, cwd: str, unit, *dependencies: Any) -> dict[str, Any]:
    """Execute `unit` (its dependencies' results are only waited for). Returns its value and where it ran."""
    set_threads(threads)  # Ray starts workers with one thread: match the driver's for equal numbers
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)  # relative paths of the command line (--text, pretrained:DIR) mean what they meant there
    _hang_if_asked(unit.name)
    ws = workspace(cfg, Path(out))
    value = ws.run_unit(unit)
    profile = ws.profiles[-1].to_json()
    return {"value": value, "seconds": profile["wall_s"], "profile": profile, "host": socket.gethostname(),
            "pid": os.getpid()}
