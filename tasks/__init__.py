"""Registered tasks. Adding one is a module defining a `Task` dataclass plus one line in `REGISTRY`
(or an entry point in the group `decompbench.tasks` of another package: see `bench.plugins`)."""

from __future__ import annotations

from bench.plugins import BUILTIN, load_plugins
from bench.specs import build
from tasks.absorption import Absorption
from tasks.autointerp import AutoInterp
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.concept_erasure import ConceptErasure
from tasks.disentanglement import Disentanglement
from tasks.ioi import IOIPatching
from tasks.loss_recovered import LossRecovered
from tasks.reconstruction import Reconstruction
from tasks.sparse_probing import SparseProbing
from tasks.stability import Stability
from tasks.toy_superposition import ToySuperposition

REGISTRY: dict[str, type[Task]] = {cls.name: cls for cls in (Reconstruction, LossRecovered, ToySuperposition, SparseProbing,
                                                         AutoInterp, IOIPatching, ConceptErasure, Stability,
                                                         Absorption, Disentanglement)}
ORIGINS: dict[str, str] = dict.fromkeys(REGISTRY, BUILTIN)  # name -> package that provides it
load_plugins("decompbench.tasks", Task, REGISTRY, ORIGINS)


def build_task(spec: str, overrides: dict | None = None) -> Task:
    """Instantiate a task from its spec, e.g. `toy_superposition[scale=paper]` (see `bench.specs`)."""
    return build(spec, REGISTRY, "task", overrides)


__all__ = ["ORIGINS", "REGISTRY", "Metric", "Task", "TaskContext", "TaskOutput", "build_task"]
