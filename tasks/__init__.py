"""Registered tasks. Adding one is a module defining a `Task` dataclass plus one line in `REGISTRY`."""

from __future__ import annotations

from bench.specs import build
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.loss_recovered import LossRecovered
from tasks.reconstruction import Reconstruction
from tasks.toy_superposition import ToySuperposition

REGISTRY: dict[str, type[Task]] = {cls.name: cls for cls in (Reconstruction, LossRecovered, ToySuperposition)}


def build_task(spec: str, overrides: dict | None = None) -> Task:
    """Instantiate a task from its spec, e.g. `toy_superposition[scale=paper]` (see `bench.specs`)."""
    return build(spec, REGISTRY, "task", overrides)


__all__ = ["REGISTRY", "Metric", "Task", "TaskContext", "TaskOutput", "build_task"]
