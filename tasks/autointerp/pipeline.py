"""Explain, then score: the pipeline for any per-token activation arrays (dictionary features or controls).

Stage 1 asks the explainer for every feature's explanation; stage 2 sends every detection and simulation request
at once (so an endpoint sees `concurrency` requests in flight, and an in-process judge reuses each feature's
prompt prefix). A failed or malformed reply drops that sample; a feature without an explanation is unscored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from bench.judge.base import Judge, Reply
from bench.seeds import rng
from tasks.autointerp.excerpts import Examples, Excerpt, Sizes, sample_examples
from tasks.autointerp.prompts import (
    activation_digits,
    clean_explanation,
    detect_request,
    explain_request,
    mark_threshold,
    render,
    simulate_request,
)
from tasks.autointerp.scoring import auroc, correlation, finite_or_none


@dataclass(frozen=True)
class Feature:
    key: str  # e.g. "1234" (a dictionary index) or "token ' the'" (a control)
    acts: np.ndarray  # float `[n_contexts, ctx_len]`, the held-out split


@dataclass
class Scored:
    key: str
    explanation: str | None
    simulation: float = float("nan")  # correlation of simulated and true activations, top + sampled excerpts
    detection_auroc: float = float("nan")  # yes-probability of top (positive) vs random (negative) excerpts
    yes_probs: list[float] = field(default_factory=list)  # the detection samples that succeeded ...
    labels: list[bool] = field(default_factory=list)  # ... and whether each was a top excerpt
    failed: int = 0  # requests whose reply failed or was malformed
    examples: dict[str, Any] = field(default_factory=dict)  # what a reader needs to judge the explanation

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.key, "explanation": self.explanation, "simulation": finite_or_none(self.simulation),
                "detection_auroc": finite_or_none(self.detection_auroc), "failed_requests": self.failed,
                **self.examples}


def _shown(excerpts: list[Excerpt], strings: Mapping[int, str], threshold: float | None) -> list[str]:
    return [render(e, strings, threshold) for e in excerpts]


def interpret(features: list[Feature], tokens: np.ndarray, strings: Mapping[int, str], judge: Judge, sizes: Sizes,
              seed: int, progress: Callable[[int, int], None] | None = None) -> tuple[list[Scored], int]:
    """Explain and score each feature. tokens int `[n_contexts, ctx_len]` -> (scored features, how many were too
    rare to score: fewer firing contexts than `sizes.min_contexts`)."""
    sampled: list[tuple[Feature, Examples]] = []
    for f in features:
        ex = sample_examples(f.acts, tokens, sizes, rng(seed, f"autointerp:{f.key}"))
        if ex is not None:
            sampled.append((f, ex))
    per_feature = 1 + sizes.n_top + sizes.n_random + sizes.n_top + sizes.n_sampled
    count = {"done": 0, "total": len(sampled) * per_feature}

    def tick(n: int) -> None:
        count["done"] += n
        if progress:
            progress(count["done"], count["total"])

    explanations = judge.map([explain_request(ex.explain, strings) for _, ex in sampled], tick)
    jobs: list[tuple[int, str, Excerpt]] = []  # (feature, "detect"/"simulate", excerpt)
    requests = []
    results = []
    for i, ((f, ex), reply) in enumerate(zip(sampled, explanations, strict=True)):
        text = clean_explanation(reply.value) if reply.ok else ""
        scored = Scored(f.key, text or None, failed=int(not reply.ok or not text))
        scored.examples = {
            "explain_excerpts": _shown(ex.explain, strings, mark_threshold(ex.explain)),
            "max_activation": float(max(e.acts.max() for e in ex.explain)),
        }
        results.append(scored)
        if not text:
            continue
        for kind, excerpts in (("detect", ex.top + ex.random), ("simulate", ex.top + ex.sampled)):
            for e in excerpts:
                jobs.append((i, kind, e))
                requests.append((detect_request if kind == "detect" else simulate_request)(e, text, strings))
    count["total"] = len(sampled) + len(requests)  # unexplained features issue no scoring requests
    replies = judge.map(requests, tick)
    mine: dict[int, list[tuple[str, Excerpt, Reply]]] = {i: [] for i in range(len(sampled))}
    for (i, kind, e), r in zip(jobs, replies, strict=True):
        mine[i].append((kind, e, r))
    for i, (_, ex) in enumerate(sampled):
        _score(results[i], ex, mine[i], strings)
    return results, len(features) - len(sampled)


def _score(scored: Scored, ex: Examples, replies: list[tuple[str, Excerpt, Reply]], strings: Mapping[int, str]) -> None:
    top = {id(e) for e in ex.top}
    probs, labels, predicted, true, shown = [], [], [], [], []
    scale = scored.examples["max_activation"]
    for kind, e, r in replies:
        scored.failed += not r.ok
        if kind == "detect":
            shown.append({"text": render(e, strings), "top": id(e) in top, "yes_prob": r.value if r.ok else None})
            if r.ok:
                probs.append(float(r.value))
                labels.append(id(e) in top)
        elif r.ok:
            predicted.extend(r.value)
            true.extend(e.acts.tolist())
    if predicted:
        scored.simulation = correlation(np.array(predicted), np.array(true))
    scored.yes_probs, scored.labels = probs, labels
    scored.detection_auroc = auroc(np.array(probs), np.array(labels))
    scored.examples["detection"] = shown
    scored.examples["simulation_excerpts"] = [
        {"text": render(e, strings), "true": activation_digits(e.acts, scale),
         "predicted": [round(v, 2) for v in r.value] if r.ok else None}
        for kind, e, r in replies if kind == "simulate"
    ]
