"""Registered tasks. Adding one is a module defining a `Task` dataclass plus one line in `REGISTRY`."""

from __future__ import annotations

from bench.errors import BenchError
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.loss_recovered import LossRecovered
from tasks.reconstruction import Reconstruction
from tasks.toy_superposition import ToySuperposition

REGISTRY: dict[str, type[Task]] = {cls.name: cls for cls in (Reconstruction, LossRecovered, ToySuperposition)}


def build_task(name: str, overrides: dict | None = None) -> Task:
    if name not in REGISTRY:
        raise BenchError(f"unknown task {name!r}; choose from {', '.join(REGISTRY)} (see `python -m bench list`)")
    return REGISTRY[name](**(overrides or {}))


__all__ = ["REGISTRY", "Metric", "Task", "TaskContext", "TaskOutput", "build_task"]
