"""The task contract: a task takes a dictionary through a small context and returns named metrics.

Nothing here (or in any task) knows which method made a dictionary. Work that does not depend on the
dictionary (clean losses, ablation baselines) is done once in `prepare` and reused for every dictionary.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from bench.dictionary import Dictionary
from bench.specs import check_fields
from bench.stats import Evidence, IntervalInfo, interval

if TYPE_CHECKING:
    from bench.judge import Judge
    from bench.models import SubjectModel
    from bench.store import ActivationStore

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Metric:
    """One number with the direction that is better.

    `interval` is a 95% interval; `interval_info` says over which units and n it was drawn and which sources of
    variance it covers, or why there is none. `evidence` keeps the per-unit data behind the number, so reports can
    compare methods scored on the same units paired (`bench.stats`). Build metrics with `Metric.of(evidence, ...)`.
    """

    value: float
    higher_is_better: bool
    interval: tuple[float, float] | None = None
    description: str = ""
    interval_info: IntervalInfo | None = None
    evidence: Evidence | None = None

    @classmethod
    def of(cls, evidence: Evidence, higher_is_better: bool, description: str = "", seed: int = 0) -> "Metric":
        """The metric that `evidence` computes, with its bootstrap interval over the evidence's units."""
        info = interval(evidence, seed)
        return cls(evidence.value(), higher_is_better, info.interval, description, info, evidence)

    @classmethod
    def without_interval(cls, value: float, higher_is_better: bool, description: str, reason: str,
                         unit: str = "", n: int = 0) -> "Metric":
        """A metric that has no interval, with the reason (e.g. a count fixed by construction)."""
        return cls(value, higher_is_better, None, description, IntervalInfo(unit, n, (), reason=reason))

    def to_json(self) -> dict[str, Any]:
        out = {
            "value": self.value,
            "higher_is_better": self.higher_is_better,
            "interval": list(self.interval) if self.interval else None,
            "description": self.description,
        }
        if self.interval_info is not None:
            out["interval_info"] = self.interval_info.to_json()
        if self.evidence is not None:
            out["evidence"] = self.evidence.to_json()
        return out


@dataclass
class TaskOutput:
    metrics: dict[str, Metric]
    details: dict[str, Any] = field(default_factory=dict)
    # Why these numbers cannot stand as a finished result (e.g. the judge failed too many requests), or None. An
    # incomplete output is not written: the run reports it and ends nonzero, and a rerun computes the row again.
    incomplete: str | None = None


@dataclass
class TaskContext:
    """What a task may use: the subject model (loaded on first use), the store, the hook, a seed, a device."""

    store: "ActivationStore"
    hook: str
    model_loader: Callable[[], "SubjectModel"]
    seed: int = 0
    device: str = "cpu"
    progress: ProgressFn | None = None
    # Fits the method behind the current dictionary again, same settings, on other data (`[n, d]` in an
    # ArraySplit). Set by the runner for tasks with `refits = True`; the task still never learns the method.
    refit: Callable[[Any], Dictionary] | None = None
    # The LLM judge of the run (autointerp), built on first use; set by the runner.
    judge_loader: Callable[[], "Judge"] | None = None
    # The same method's dictionaries fitted with the run's other seeds (`--seeds`), for tasks with
    # `cross_seed = True`; set by the runner, None when the run has one seed or the method is not seeded.
    siblings: Callable[[], list[Dictionary]] | None = None
    _model: "SubjectModel | None" = field(default=None, repr=False)

    @property
    def model(self) -> "SubjectModel":
        if self._model is None:
            self._model = self.model_loader()
        return self._model

    @property
    def judge(self) -> "Judge":
        if self.judge_loader is None:
            raise RuntimeError("this context has no judge; tasks that use one set `needs_judge = True`")
        return self.judge_loader()


@dataclass
class Task(abc.ABC):
    """Base for every task. Subclasses are dataclasses whose fields are the task's settings; a field declares its
    range with `bench.specs.param` (or `positive`, `fraction`, `one_of`...), checked when the task is made."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False
    needs_judge: ClassVar[bool] = False  # uses the run's LLM judge (ctx.judge); its identity joins the resume key
    refits: ClassVar[bool] = False  # asks the method to fit again on other data, through ctx.refit
    needs_grad: ClassVar[bool] = False  # differentiates through the dictionary in `evaluate` (no inference mode)
    topk_rows: ClassVar[bool] = True  # also score the top-k (matched-sparsity) variants of dense methods
    depends_on_model: ClassVar[bool] = True  # False: never reads the model or its activations (a control skips it)
    cross_seed: ClassVar[bool] = False  # compares a dictionary with its other seeds' (ctx.siblings): seeded methods only
    # Bump with any change that moves a number: a resumed run recomputes what an older version stored.
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        check_fields(self)  # types and ranges of every setting, before the run harvests anything

    def prepare(self, ctx: TaskContext) -> None:  # noqa: B027 - optional hook
        """Dictionary-independent work, done once per run before `evaluate` is called."""

    @abc.abstractmethod
    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        """Score one dictionary."""
