"""Explain, then score: the pipeline for any per-token activation arrays (dictionary features or controls).

Stage 1 asks the explainer for every feature's explanation; stage 2 sends every scoring request at once (so an
endpoint sees `concurrency` requests in flight), ordered by scorer and then by feature: an in-process judge keeps
the longest common prefix in its KV cache, so each scorer's instructions are evaluated once and each feature's
explanation once per scorer, and it decodes a feature's samples of one scorer side by side in one batch
(`Choice.group`). A failed or malformed reply drops that sample; a feature without an explanation is unscored.

Three scores per feature:
- detection: AUROC of the judge's P(yes) on activating (positive) vs non-firing (negative) excerpts;
- fuzzing (delphi): the activating excerpts with the feature's tokens marked, half of them with the marks moved
  to other tokens; AUROC of P(yes) on true (positive) vs moved (negative) marks;
- simulation (Bills et al.): correlation of the judge's expected 0..9 activation with the true activations, per
  token of the simulated excerpts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np

from bench.judge.base import Judge, Reply
from bench.seeds import rng
from tasks.autointerp.excerpts import Examples, Excerpt, Sizes, sample_examples
from tasks.autointerp.prompts import (
    activation_digits,
    clean_explanation,
    copied,
    detect_request,
    explain_request,
    fuzz_request,
    fuzzed_marks,
    mark_threshold,
    marked_tokens,
    render,
    simulate_request,
    true_marks,
)
from tasks.autointerp.scoring import auroc, auroc_variance, correlation, finite_or_none

SCORERS = ("detection", "fuzzing", "simulation")  # the order requests are sent in (see the module docstring)


@dataclass(frozen=True)
class Feature:
    key: str  # e.g. "1234" (a dictionary index) or "token ' the'" (a control)
    acts: np.ndarray  # float `[n_contexts, ctx_len]`, the held-out split


@dataclass
class Scored:
    key: str
    explanation: str | None
    simulation: float = float("nan")  # correlation of simulated and true activations over the simulated excerpts
    detection_auroc: float = float("nan")  # P(yes) on activating (positive) vs non-firing (negative) excerpts
    fuzzing_auroc: float = float("nan")  # P(yes) on true (positive) vs moved (negative) marks
    within: dict[str, float] = field(default_factory=dict)  # per scorer: the AUROC's sampling variance (DeLong)
    yes_probs: list[float] = field(default_factory=list)  # the detection samples that succeeded ...
    labels: list[bool] = field(default_factory=list)  # ... and whether each was an activating excerpt
    copied: list[str] = field(default_factory=list)  # worked-example words the explanation repeats (`prompts.copied`)
    failed: int = 0  # requests whose reply failed or was malformed
    examples: dict[str, Any] = field(default_factory=dict)  # what a reader needs to judge the explanation

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.key, "explanation": self.explanation, "simulation": finite_or_none(self.simulation),
                "detection_auroc": finite_or_none(self.detection_auroc),
                "fuzzing_auroc": finite_or_none(self.fuzzing_auroc),
                "within_variance": {k: finite_or_none(v) for k, v in self.within.items()},
                "copied": self.copied, "failed_requests": self.failed, **self.examples}


@dataclass(frozen=True)
class _Job:
    feature: int
    scorer: str
    excerpt: Excerpt
    positive: bool = True  # detection: activating; fuzzing: true marks
    marks: np.ndarray | None = None  # fuzzing: the marks shown


def _jobs(i: int, ex: Examples, sizes: Sizes, g: np.random.Generator) -> list[_Job]:
    """Feature i's scoring samples. Fuzzing and simulation take activating excerpts alternately from the top and
    the quantile-sampled ones (the list is top first); fuzzing moves the marks of a random half of its samples."""
    n_top = sum(e.drawn == "top" for e in ex.activating)
    interleaved = [e for pair in zip(ex.activating[:n_top], ex.activating[n_top:], strict=False) for e in pair]
    interleaved += [e for e in ex.activating if all(e is not f for f in interleaved)]
    fuzz = interleaved[: sizes.n_fuzz]
    moved = set(g.permutation(len(fuzz))[: len(fuzz) // 2].tolist())
    return ([_Job(i, "detection", e, True) for e in ex.activating]
            + [_Job(i, "detection", e, False) for e in ex.non_firing]
            + [_Job(i, "fuzzing", e, k not in moved, fuzzed_marks(e, g) if k in moved else true_marks(e))
               for k, e in enumerate(fuzz)]
            + [_Job(i, "simulation", e) for e in interleaved[: sizes.n_simulate]])


def _request(job: _Job, explanation: str, strings: Mapping[int, str]):
    """The job's request; a feature's samples of one scorer form a group (`Choice.group`), which a judge
    that decodes side by side answers at once and a rerun rebuilds identically."""
    if job.scorer == "detection":
        request = detect_request(job.excerpt, explanation, strings)
    elif job.scorer == "fuzzing":
        request = fuzz_request(job.excerpt, job.marks, explanation, strings)
    else:
        request = simulate_request(job.excerpt, explanation, strings)
    return replace(request, group=f"{job.scorer}:{job.feature}")


def interpret(features: list[Feature], tokens: np.ndarray, strings: Mapping[int, str], judge: Judge, sizes: Sizes,
              seed: int, progress: Callable[[int, int], None] | None = None) -> tuple[list[Scored], int]:
    """Explain and score each feature. tokens int `[n_contexts, ctx_len]` -> (scored features, how many were too
    rare to score: fewer firing contexts than `sizes.min_contexts`)."""
    sampled: list[tuple[Feature, Examples]] = []
    for f in features:
        ex = sample_examples(f.acts, tokens, sizes, rng(seed, f"autointerp:{f.key}"))
        if ex is not None:
            sampled.append((f, ex))
    count = {"done": 0, "total": len(sampled) * (1 + sizes.samples_per_feature)}

    def tick(n: int) -> None:
        count["done"] += n
        if progress:
            progress(count["done"], count["total"])

    explanations = judge.map([explain_request(ex.explain, strings) for _, ex in sampled], tick)
    jobs: list[_Job] = []
    results = []
    for i, ((f, ex), reply) in enumerate(zip(sampled, explanations, strict=True)):
        text = clean_explanation(reply.value) if reply.ok else ""
        shown = [render(e, strings, mark_threshold(ex.explain)) for e in ex.explain]
        scored = Scored(f.key, text or None, failed=int(not reply.ok or not text),
                        copied=copied(text, marked_tokens(ex.explain, strings)) if text else [])
        scored.examples = {
            "explain_excerpts": shown,
            "max_activation": float(max(e.acts.max() for e in ex.explain)),
            "drawn": {"activating": [e.drawn for e in ex.activating],
                      "non_firing": "quietest windows (the feature fires in almost every window)" if ex.quietest
                      else "windows where the feature never fires", "n_quietest": ex.quietest},
        }
        results.append(scored)
        if text:
            jobs += _jobs(i, ex, sizes, rng(seed, f"autointerp:fuzz:{f.key}"))
    order = {s: k for k, s in enumerate(SCORERS)}
    jobs.sort(key=lambda j: order[j.scorer])  # stable: by scorer, then feature, then sample
    count["total"] = len(sampled) + len(jobs)  # unexplained features issue no scoring requests
    replies = judge.map([_request(j, results[j.feature].explanation or "", strings) for j in jobs], tick)
    mine: dict[int, list[tuple[_Job, Reply]]] = {i: [] for i in range(len(sampled))}
    for j, r in zip(jobs, replies, strict=True):
        mine[j.feature].append((j, r))
    for i in range(len(sampled)):
        _score(results[i], mine[i], strings)
    return results, len(features) - len(sampled)


def _score(scored: Scored, replies: list[tuple[_Job, Reply]], strings: Mapping[int, str]) -> None:
    scale = scored.examples["max_activation"]
    answers: dict[str, tuple[list[float], list[bool]]] = {"detection": ([], []), "fuzzing": ([], [])}
    shown: dict[str, list[dict[str, Any]]] = {"detection": [], "fuzzing": []}
    predicted, true = [], []
    for job, r in replies:
        scored.failed += not r.ok
        if job.scorer in answers:
            text = render(job.excerpt, strings, marks=job.marks)
            shown[job.scorer].append({"text": text, "drawn": job.excerpt.drawn, "positive": job.positive,
                                      "yes_prob": r.value if r.ok else None})
            if r.ok:
                answers[job.scorer][0].append(float(r.value))
                answers[job.scorer][1].append(job.positive)
        elif r.ok:
            predicted.extend(r.value)
            true.extend(job.excerpt.acts.tolist())
    if predicted:
        scored.simulation = correlation(np.array(predicted), np.array(true))
    for scorer, (probs, labels) in answers.items():
        value = auroc(np.array(probs), np.array(labels, bool))
        setattr(scored, f"{scorer}_auroc", value)
        scored.within[scorer] = auroc_variance(np.array(probs), np.array(labels, bool))
    scored.yes_probs, scored.labels = answers["detection"]
    scored.examples["detection"] = shown["detection"]
    scored.examples["fuzzing"] = shown["fuzzing"]
    scored.examples["simulation_excerpts"] = [
        {"text": render(job.excerpt, strings), "drawn": job.excerpt.drawn,
         "true": activation_digits(job.excerpt.acts, scale),
         "predicted": [round(v, 2) for v in r.value] if r.ok else None}
        for job, r in replies if job.scorer == "simulation"
    ]
