"""`autointerp`: are a method's features interpretable? An explainer LLM describes each sampled feature from its
top-activating excerpts; a scorer LLM, given only the description, predicts where it fires on held-out excerpts.

Three scores per feature (Bills et al. 2023; Cunningham et al. 2023; SAEBench and delphi for detection and
fuzzing), on excerpts drawn as `excerpts.py` says (activating: top and quantile-sampled; negatives: windows where
the feature never fires):
- `simulation`: correlation between the scorer's expected 0..9 activation per token and the true activations on
  activating excerpts;
- `detection`: AUROC of the scorer's yes-probability on activating (positive) vs non-firing (negative) excerpts,
  and balanced accuracy at this judge's threshold, calibrated on controls of known meaning;
- `fuzzing`: AUROC of the yes-probability on activating excerpts whose marks sit on the feature's tokens
  (positive) vs marks moved to other tokens (negative).
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
from tasks.autointerp.prompts import MARK_FRACTION
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
    n_features: int = positive(8)  # per method, sampled among the features that fire in enough held-out contexts
    window: int = positive(16)  # tokens per excerpt (the paper: 64)
    n_explain: int = positive(5)  # top-activating excerpts the explainer reads (the paper: 5)
    n_score_top: int = positive(4)  # held-out top-activating excerpts scored
    n_score_quantile: int = non_negative(6)  # activating excerpts drawn one per stratum of the rest (delphi)
    n_score_non_firing: int = positive(10)  # windows where the feature never fires: detection's negatives
    n_fuzz: int = non_negative(6)  # activating excerpts shown with marks, half of them moved: fuzzing
    n_simulate: int = non_negative(2)  # activating excerpts simulated token by token (the paper: 10)
    n_controls: int = positive(3)  # known-meaning controls, each with a shuffled twin, to calibrate the judge
    n_contexts: int | None = positive(None)  # held-out contexts read (None: the whole eval split)
    encode_batch: int = positive(16)  # contexts encoded at once

    name = "autointerp"
    version = 3  # 2: excerpts across quantiles, non-firing negatives, fuzzing, prefix-first prompts; 3: the judge's
    # answers in canonical pieces, a feature's samples of one scorer decoded side by side, flash attention
    description = "explain features with an LLM judge, score by simulation and detection; judge calibrated on controls"
    needs_model = True  # the subject model's tokenizer turns token ids back into text
    needs_judge = True
    topk_rows = False  # a dense method's top-k variant has the same top-activating excerpts

    @property
    def sizes(self) -> Sizes:
        return Sizes(self.window, self.n_explain, self.n_score_top, self.n_score_quantile, self.n_score_non_firing,
                     self.n_fuzz, self.n_simulate)

    def prepare(self, ctx: TaskContext) -> None:
        split = ctx.store.eval
        n = split.n_contexts if self.n_contexts is None else min(self.n_contexts, split.n_contexts)
        self._tokens, self._keep = split.tokens()[:n], split.keep()[:n]
        tokenizer = ctx.model.tokenizer
        self._strings = {int(t): tokenizer.decode([int(t)]) for t in np.unique(self._tokens)}
        known, shuffled = control_features(self._tokens, self._keep, self._strings, self.n_controls,
                                           self.sizes.min_contexts, ctx.seed)
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

    def _sampling(self, scored: list[Scored]) -> dict[str, Any]:
        """How each feature's excerpts were drawn, as a reader needs it beside the scores."""
        sz = self.sizes
        return {"activating": f"{sz.n_top} of the strongest contexts (others than the explainer's {sz.n_explain}) "
                f"and {sz.n_quantile} drawn one per stratum of the remaining firing contexts ranked by peak",
                "non_firing": f"{sz.n_non_firing} windows of {sz.window} tokens where the feature never fires, each "
                "from another context; the quietest windows where a feature fires almost everywhere",
                "fuzzing": f"{sz.n_fuzz} activating excerpts with marks on tokens >= {MARK_FRACTION} of their peak, "
                "half of them moved to other tokens",
                "simulation": f"{sz.n_simulate} activating excerpts",
                "features_with_quietest_negatives": sum(bool(s.examples.get("drawn", {}).get("n_quietest"))
                                                        for s in scored)}

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
                                       "activations per token of activating excerpts, mean over features", ctx.seed),
            "detection_auroc": feature_mean(keys, [s.detection_auroc for s in scored], "AUROC of the judge's "
                                            "yes-probability, activating vs non-firing excerpts, mean over features",
                                            ctx.seed),
            "fuzzing_auroc": feature_mean(keys, [s.fuzzing_auroc for s in scored], "AUROC of the judge's "
                                          "yes-probability, true vs moved marks on activating excerpts, mean over "
                                          "features", ctx.seed),
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
            "sampling": self._sampling(scored),
            "variance": variance(scored),
            "copies": {"explanations": sum(s.explanation is not None for s in scored),
                       "copied": sum(bool(s.copied) for s in scored)},
            "calibration": cal,
            "features": [s.to_json() for s in scored],
            "board_notes": [_calibration_note(judge.name, judge.simulation_mode, cal)],
        }
        return TaskOutput(metrics, details, incomplete=incomplete)


def variance(scored: list[Scored]) -> dict[str, dict[str, float | None]]:
    """Per scorer, the per-feature score's variance split into its within-feature part (the mean DeLong sampling
    variance: more samples per feature shrink it) and the between-feature rest (only more features shrink it).
    Simulation has no within-feature estimate here (its tokens are not independent samples)."""
    out: dict[str, dict[str, float | None]] = {}
    for scorer, attr in (("detection", "detection_auroc"), ("fuzzing", "fuzzing_auroc"), ("simulation", "simulation")):
        v = np.array([getattr(s, attr) for s in scored], float)
        w = np.array([s.within.get(scorer, np.nan) for s in scored], float)
        ok = np.isfinite(v)
        total = float(v[ok].var(ddof=1)) if ok.sum() > 1 else None
        within = float(np.nanmean(w[ok])) if np.isfinite(w[ok]).any() else None
        n = [sum(d["yes_prob"] is not None for d in s.examples.get(scorer, [])) for s, o in zip(scored, ok,
                                                                                                 strict=True) if o]
        out[attr] = {"total": total, "within": within,
                     "between": None if total is None or within is None else max(total - within, 0.0),
                     "samples_per_feature": float(np.mean(n)) if n and scorer != "simulation" else None}
    return out


def _spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def _calibration_note(name: str, mode: str, cal: dict[str, Any]) -> str:
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    scores = (("detection", "detection_auroc"), ("fuzzing", "fuzzing_auroc"), ("simulation", "simulation"))
    return (f"autointerp judge {name} ({mode} simulation). Calibration on {cal['n_known']} known-token controls vs "
            f"{cal['n_shuffled']} shuffled: separation AUROC "
            + ", ".join(f"{n} {fmt(cal.get(f'separation_{k}'))}" for n, k in scores)
            + " (1 = perfect, 0.5 = cannot tell); known controls score "
            + " / ".join(fmt(cal.get(f"{k}_known")) for _, k in scores) + ", shuffled "
            + " / ".join(fmt(cal.get(f"{k}_shuffled")) for _, k in scores) + " (detection / fuzzing / simulation)")


__all__ = ["AutoInterp", "Scored"]
