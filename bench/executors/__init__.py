"""Executors run a `bench.units.Grid`: in this process (`local`, the default) or on a Ray cluster (`ray`).

Both return the same records in the same order and write the same files; the local one shows today's progress
bars, the Ray one a bar over units and one line per finished unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.runner import Runner
    from bench.units import Grid

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    in_process: bool  # units run in the driver (the runner's judge and model are reused)

    def run(self, grid: "Grid", runner: "Runner") -> list[dict[str, Any]]:
        """Run every unit of `grid` (dependencies first) and return the records, side by side, task by task."""


@dataclass(frozen=True)
class ExecutorOptions:
    name: str = "local"
    ray_address: str | None = None  # None: a local Ray started on demand; "auto" or HOST:PORT: an existing cluster


class UnitsFailed(BenchError):
    """Some units failed (the others finished and were kept): the message names them; a rerun resumes."""

    exit_code = 1

    @classmethod
    def listing(cls, failures: list[str]) -> "UnitsFailed":
        return cls(f"{len(failures)} unit(s) failed, the rest finished and were kept: " + "; ".join(failures)
                   + ". Rerun the same command (same --out) to resume")


def make_executor(options: ExecutorOptions) -> Executor:
    if options.name == "local":
        from bench.executors.local import LocalExecutor

        return LocalExecutor()
    if options.name == "ray":
        from bench.executors.ray import RayExecutor

        return RayExecutor(options.ray_address)
    raise BenchError(f"unknown executor {options.name!r}; choose from {', '.join(EXECUTORS)}")
