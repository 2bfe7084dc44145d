"""The method contract: hyper-parameters in `__init__` (a dataclass), `fit(train) -> Dictionary`.

A method never keeps learned state itself: everything it learns lives in the `Dictionary` it returns, so one
method object can be fitted on many activation sets.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, ClassVar, Protocol

import torch

from bench.dictionary import Dictionary
from bench.specs import check_fields, non_negative

ProgressFn = Callable[[int, int], None]  # (done, total) -> None


class TrainingData(Protocol):
    """What `fit` receives: the train split of an activation store (see `bench.store.ActivationSplit`)."""

    d_model: int

    @property
    def n_kept(self) -> int: ...

    def kept_activations(self, max_tokens: int | None = None, seed: int = 0) -> torch.Tensor:
        """`[n, d_model]` float32, excluded tokens already removed."""

    def batches(self, batch_size: int, seed: int = 0, epochs: float = 1.0):
        """Iterator of shuffled `[batch_size, d_model]` float32 batches."""


@dataclass
class Method(abc.ABC):
    """Base for every method. Subclasses are dataclasses whose fields are the hyper-parameters.

    `seed` and `device` are set by the runner; `sparse` says whether the method is trained for sparsity (dense
    methods are also scored at an SAE's L0 by keeping each token's top-k codes). A field declares its range with
    `bench.specs.param` (or `positive`, `fraction`, `one_of`...): it is checked when the method is made.
    """

    seed: int = non_negative(0)  # (numpy and scikit-learn refuse negative seeds)
    device: str = "cpu"

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    sparse: ClassVar[bool] = False
    in_all: ClassVar[bool] = True  # False: left out of `--methods all` (it needs an argument, e.g. a path)
    refittable: ClassVar[bool] = True  # False: cannot be fitted on other data (tasks that refit skip it)
    seeded: ClassVar[bool] = True  # False: the fit does not depend on the seed (fitted once with `--seeds`)
    # Bump with any change that moves a fitted dictionary: a resumed run refits what an older version made.
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        check_fields(self)  # types and ranges of every field, before any expensive work
        self.fit_info_: dict = {}  # what the last fit reports about itself (iterations, convergence, losses)
        self.timing_: dict = {}  # where the last fit's time went (SAEs: seconds per step phase); not in results

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """Check what can be checked without the model or activations (files the method reads, their format), so
        that a run fails in a second rather than after harvesting. Called by the runner for every method before
        any work; must be cheap. Raises a one-line BenchError."""

    @abc.abstractmethod
    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> Dictionary:
        """Fit on training activations and return the dictionary."""
