"""`autointerp`: are a method's features interpretable? An explainer LLM describes each sampled feature from its
top-activating excerpts; a scorer LLM, given only the description, predicts where it fires on held-out excerpts.

Two scores per feature (Bills et al. 2023; Cunningham et al. 2023; SAEBench and delphi for detection):
- `simulation`: correlation between the scorer's expected 0..9 activation per token and the true activations on
  top-activating and random firing excerpts;
- `detection`: AUROC of the scorer's yes-probability on top-activating (positive) vs random (negative) excerpts,
  and balanced accuracy at this judge's threshold, calibrated on controls of known meaning.
Per method: means over features with bootstrap 95% intervals over features (none below 5 features: see
`scoring.feature_mean`), and per-feature records (explanation, excerpts, judge answers). Before any method, the
judge is calibrated (see `calibration.py`) and the result says how well it separates known from shuffled
controls: weak judges are the rule on a CPU, and a score means little without it.

A judge outage must not become a finished result: if more than `MAX_UNANSWERED` of a row's judge requests got no
answer (HTTP errors or timeouts after every retry), or a metric is undefined while any went unanswered, the row
is not stored (`TaskOutput.incomplete`) and a rerun retries it; the same limit on the calibration's requests stops
the task before any row. Malformed answers do not count: they are the judge's answer, which a rerun would repeat.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from bench.dictionary import Dictionary
from bench.errors import BenchError
from bench.seeds import rng
from bench.specs import non_negative, positive
from tasks.autointerp.calibration import calibrate, control_features
from tasks.autointerp.excerpts import Sizes
from tasks.autointerp.pipeline import Feature, Scored, interpret
from tasks.autointerp.scoring import balanced_accuracy, feature_mean, finite_or_none
from tasks.base import Task, TaskContext, TaskOutput

# More than this fraction of a row's requests unanswered is an outage, not noise: the row is not stored. A request
# counts as unanswered only after all its retries, so even one is rare; up to 10% tolerates a few prompts a server
# refuses for good (e.g. HTTP 400, too long) without dropping more than a tenth of the samples behind a mean.
MAX_UNANSWERED = 0.1


def unanswered(spent: dict[str, int], last_error: str, undefined: list[str] | None = None) -> str | None:
    """Why results that cost judge usage `spent` (a `Usage` difference) cannot be kept, or None: too many requests
    unanswered, or any while metrics came out `undefined` (NaN; the failures may be why)."""
    n, bad = spent["requests"], spent["unanswered"]
    if bad == 0 or (bad <= MAX_UNANSWERED * n and not undefined):
        return None
    left = f", leaving {', '.join(undefined)} undefined" if undefined and bad <= MAX_UNANSWERED * n else ""
    return f"{bad} of {n} judge requests failed{left}" + (f" ({last_error})" if last_error else "")


@dataclass
class AutoInterp(Task):
    n_features: int = positive(3)  # per method, sampled among the features that fire in enough held-out contexts
    window: int = positive(16)  # tokens per excerpt (the paper: 64)
    n_explain: int = positive(5)  # top-activating excerpts the explainer reads (the paper: 5)
    n_score_top: int = positive(2)  # held-out top-activating excerpts scored (the paper: 5)
    n_score_random: int = positive(2)  # random excerpts: detection's negatives
    n_score_sampled: int = non_negative(2)  # random excerpts where the feature fires: simulation's other half (the paper: 5)
    n_controls: int = positive(3)  # known-meaning controls, each with a shuffled twin, to calibrate the judge
    n_contexts: int | None = positive(None)  # held-out contexts read (None: the whole eval split)
    encode_batch: int = positive(16)  # contexts encoded at once

    name = "autointerp"
    description = "explain features with an LLM judge, score by simulation and detection; judge calibrated on controls"
    needs_model = True  # the subject model's tokenizer turns token ids back into text
    needs_judge = True
    topk_rows = False  # a dense method's top-k variant has the same top-activating excerpts

    @property
    def sizes(self) -> Sizes:
        return Sizes(self.window, self.n_explain, self.n_score_top, self.n_score_random, self.n_score_sampled)

    def prepare(self, ctx: TaskContext) -> None:
        split = ctx.store.eval
        n = split.n_contexts if self.n_contexts is None else min(self.n_contexts, split.n_contexts)
        self._tokens, self._keep = split.tokens()[:n], split.keep()[:n]
        tokenizer = ctx.model.tokenizer
        self._strings = {int(t): tokenizer.decode([int(t)]) for t in np.unique(self._tokens)}
        known, shuffled = control_features(self._tokens, self._keep, self._strings, self.n_controls,
                                           self.sizes.min_contexts + self.n_score_sampled, ctx.seed)
        if not known:
            raise BenchError("autointerp: no token of the eval split is frequent enough for judge calibration; "
                             "harvest more eval contexts")
        judge = ctx.judge
        before = asdict(judge.usage)
        scored, _ = interpret(known + shuffled, self._tokens, self._strings, judge, self.sizes, ctx.seed, ctx.progress)
        spent = _spent(before, asdict(judge.usage))
        if why := unanswered(spent, judge.last_error):  # every row would be scored against a broken calibration
            raise BenchError(f"autointerp judge calibration: {why}; nothing stored, rerun to retry once the judge "
                             "answers")
        self._calibration = calibrate(scored[: len(known)], scored[len(known):])
        self._calibration["controls"] = [s.to_json() for s in scored]
        self._calibration["usage"] = spent

    def features(self, dictionary: Dictionary, ctx: TaskContext) -> tuple[list[Feature], dict[str, int]]:
        """Seeded sample of features that fire in enough held-out contexts, with counts of dead and rare ones."""
        split, n = ctx.store.eval, len(self._tokens)
        keep = torch.from_numpy(self._keep)
        dictionary = dictionary.to(ctx.device)

        def codes(start: int, stop: int) -> torch.Tensor:
            x = split.context_activations(start, stop).to(ctx.device)
            c = dictionary.encode(x.reshape(-1, x.shape[-1])).reshape(stop - start, x.shape[1], -1).float().cpu()
            return c * keep[start:stop, :, None]

        fired_tokens = torch.zeros(dictionary.d_dict)
        fired_contexts = torch.zeros(dictionary.d_dict)
        for start in range(0, n, self.encode_batch):
            c = codes(start, min(start + self.encode_batch, n)) > 0
            fired_tokens += c.sum((0, 1))
            fired_contexts += c.any(1).sum(0)
        eligible = torch.nonzero(fired_contexts >= self.sizes.min_contexts).flatten().numpy()
        g = rng(ctx.seed, "autointerp:features")
        chosen = np.sort(g.choice(eligible, size=min(self.n_features, len(eligible)), replace=False))
        acts = np.zeros((len(chosen), n, self._tokens.shape[1]), np.float32)
        for start in range(0, n, self.encode_batch):
            stop = min(start + self.encode_batch, n)
            acts[:, start:stop] = codes(start, stop)[:, :, torch.from_numpy(chosen)].permute(2, 0, 1).numpy()
        counts = {"n_features": dictionary.d_dict, "n_dead": int((fired_tokens == 0).sum()),
                  "n_too_rare": int(((fired_tokens > 0) & (fired_contexts < self.sizes.min_contexts)).sum()),
                  "n_sampled": len(chosen)}
        return [Feature(str(int(i)), a) for i, a in zip(chosen, acts, strict=True)], counts

    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        features, counts = self.features(dictionary, ctx)
        judge = ctx.judge
        before = asdict(judge.usage)
        scored, _ = interpret(features, self._tokens, self._strings, judge, self.sizes, ctx.seed, ctx.progress)
        threshold = self._calibration["threshold"]
        for s in scored:
            s.examples["detection_balanced_accuracy"] = finite_or_none(
                balanced_accuracy(np.array(s.yes_probs), np.array(s.labels, bool), threshold))
        keys = [s.key for s in scored]  # the feature's index in the dictionary: the evidence's ids
        bal_acc = [np.nan if (v := s.examples["detection_balanced_accuracy"]) is None else v for s in scored]
        metrics = {
            "simulation": feature_mean(keys, [s.simulation for s in scored], "correlation of simulated and true "
                                       "activations (top + random firing excerpts), mean over features", ctx.seed),
            "detection_auroc": feature_mean(keys, [s.detection_auroc for s in scored], "AUROC of the judge's "
                                            "yes-probability, top vs random excerpts, mean over features", ctx.seed),
            "detection_bal_acc": feature_mean(
                keys, bal_acc, f"balanced accuracy at the judge's calibrated yes-threshold {threshold:.3f}, mean over "
                "features", ctx.seed),
        }
        cal = self._calibration
        spent = _spent(before, asdict(judge.usage))
        undefined = [name for name, m in metrics.items() if not np.isfinite(m.value)]
        incomplete = unanswered(spent, judge.last_error, undefined)
        details = {
            **counts,
            "n_scored": sum(np.isfinite(s.simulation) or np.isfinite(s.detection_auroc) for s in scored),
            "judge": {"name": judge.name, "simulation_mode": judge.simulation_mode, "usage": spent},
            "calibration": cal,
            "features": [s.to_json() for s in scored],
            "board_notes": [_calibration_note(judge.name, judge.simulation_mode, cal)],
        }
        return TaskOutput(metrics, details, incomplete=incomplete)


def _spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def _calibration_note(name: str, mode: str, cal: dict[str, Any]) -> str:
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    return (f"autointerp judge {name} ({mode} simulation). Calibration on {cal['n_known']} known-token controls vs "
            f"{cal['n_shuffled']} shuffled: separation AUROC detection {fmt(cal['separation_detection_auroc'])}, "
            f"simulation {fmt(cal['separation_simulation'])} (1 = perfect, 0.5 = cannot tell); known controls score "
            f"detection {fmt(cal['detection_auroc_known'])} / simulation {fmt(cal['simulation_known'])}, shuffled "
            f"{fmt(cal['detection_auroc_shuffled'])} / {fmt(cal['simulation_shuffled'])}")


__all__ = ["AutoInterp", "Scored"]
