"""The run directory (`--out`): one run at a time, and nothing written before the run is known to fit it.

- `RunLock`: an exclusive `flock` on `<out>/.lock` for the run's lifetime. A second run on the same directory gets a
  one-line error naming the holder's PID; the kernel drops the lock when the holder dies (kill -9 included), so
  a stale lock never blocks a resume.
- `check_resumable`: a directory that already holds finished work (dictionaries, results) may only be resumed
  with the settings that made its numbers. Methods, tasks and extra seeds may be added (they add rows); anything
  else is refused, in one line naming the fields, before any file is written.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from bench.errors import BenchError

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"

# RunConfig fields a resume may change: what to run, not what the numbers mean.
MAY_CHANGE = frozenset({"methods", "tasks", "task_methods", "seeds", "harvest_batch"})
# Judge settings that change how requests travel, not the answers (the endpoint's address included: the model it
# serves, `judge.model`, is what the results' resume keys hold).
JUDGE_TRANSPORT = frozenset({"base_url", "concurrency", "timeout_s", "max_retries", "threads", "cache"})


class RunLock:
    """Hold `<out>/.lock` exclusively (`with RunLock(out): ...`)."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise BenchError(f"cannot write to output directory {self.path.parent} ({e.strerror}); "
                             "pass a writable --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                who = f"PID {holder}" if holder else "another process"
                raise BenchError(f"{self.path.parent} is in use by another run ({who}); wait for it to finish or "
                                 "pass another --out") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # the PID of a finished run would mislead the next error message
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def check_resumable(out: Path, config: dict[str, Any]) -> None:
    """Refuse to resume `out` with settings that change what its finished numbers mean. `config`: the new
    `RunConfig` as a dict (redacted as it will be written)."""
    path = Path(out) / CONFIG_FILE
    if not path.exists() or not has_finished_work(Path(out)):
        return  # no number to protect (e.g. a run refused after the harvest): its settings may change
    try:
        old = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BenchError(f"{path} is unreadable, so {out} cannot be resumed safely; pass a new --out (or delete "
                         "that directory)") from None
    diffs = [f"{name} {_show(old.get(name))} → {_show(value)}" for name, value in config.items()
             if name not in MAY_CHANGE and name != "judge" and _norm(old.get(name)) != _norm(value)]
    old_judge, new_judge = old.get("judge") or {}, config.get("judge") or {}
    diffs += [f"judge.{name} {_show(old_judge.get(name))} → {_show(value)}" for name, value in new_judge.items()
              if name not in JUDGE_TRANSPORT and _norm(old_judge.get(name)) != _norm(value)]
    if not diffs:
        return
    raise BenchError(f"{out} holds a run with other settings ({'; '.join(diffs)}); pass a new --out, or rerun with "
                     "that run's settings to resume it (its finished results are kept)")


def has_finished_work(out: Path) -> bool:
    """Whether a run directory holds a fitted dictionary or a result (its control sides' included)."""
    return any(out.rglob("dictionary.json")) or any(out.rglob("results/*.json"))


def _norm(value: Any) -> Any:
    """JSON round trip: tuples and lists compare equal, as config.json stores them."""
    return json.loads(json.dumps(value, default=str))


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "…"
