"""`ioi_patching`: how few of a method's features carry indirect-object identification (Cunningham et al. 2023, §4).

Prompt pairs (see `dataset.py`): clean "When Mary and John went to the store, John gave a drink to" (-> " Mary")
and its counterfactual with Mary replaced by a third name. First the model itself is checked: mean logit difference
LD = logit(IO) - logit(S) on clean prompts and the share of prompts where it is positive; a model that does not
do the task gets that verdict in its result and no curves.

Then, per dictionary, the counterfactual run is patched at the hook by moving k features to their clean values,
the reconstruction error kept (`patching.py`): k = 0 is the counterfactual run, all features plus the error node
the clean run. Features are ranked by attribution, gradient x code difference with the gradient of LD taken once
at the counterfactual run, and moved in that order, k = 1, 2, 4, ... At each k: KL(p_clean || p_patched) at the
last position, the recovered share of the logit difference, and the edit's size. A greedy threshold search (the
paper's procedure, on a pass budget) then drops blocks of the weakest features from the attribution set that
reaches each target while recovery holds, which can only shrink it.

Metrics: k50 / k90 (fewest features recovering 50% / 90% of the change in LD), their greedy counterparts, the area
under the normalised KL-vs-k curve on a log axis, the edit at k50 relative to the whole clean-minus-counterfactual
edit, and the share of the effect left to the error term when every feature has moved.

Uncertainty (`bench.stats`): the unit is a prompt pair. `kl_auc`, `edit_k50/90` and `error_effect` are ratios of
per-prompt sums (the area is linear in the KL at each k, see `patching.kl_auc_weights`), so each gets a bootstrap
interval over prompts with the features, their ranking and the chosen k held fixed. The k's (`k50`, `greedy_k90`,
...) are counts read off the curve of all prompts' mean logit difference (the greedy ones after a search that
costs forward passes): they carry no interval, and say why; each curve point's recovery has its interval in
`details`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.dictionary import Dictionary
from bench.seeds import stream
from bench.specs import fraction, param, positive
from bench.stats import Evidence, interval
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.divergence import CleanDistribution
from tasks.ioi.dataset import TEMPLATES, make_dataset
from tasks.ioi.patching import Curves, Patcher, Point, edit_norms, kl_auc_weights, smallest_k
from tasks.prompts import special_ids

SOURCES = ("prompts (features, ranking and k held fixed)",)
NO_INTERVAL = ("a count on the k grid read off the curve of all prompts' mean logit difference, not a statistic of "
               "per-prompt values (each curve point's recovery has an interval in details.attribution_curve)")


@dataclass
class IOIPatching(Task):
    n_prompts: int = param(16, ge=2, even=True)  # half ABBA, half BABA
    batch_size: int = positive(32)  # prompts per forward pass
    greedy_targets: tuple[float, ...] = fraction((0.5, 0.9))  # recovery each greedy search must keep
    greedy_passes: int = positive(6)  # forward passes each greedy search may spend
    min_logit_diff: float = 1.0  # the model "does IOI" if its mean clean LD reaches this...
    min_accuracy: float = fraction(0.7)  # ...and LD > 0 on at least this share of prompts

    name = "ioi_patching"
    description = "features moved from counterfactual to clean IOI prompts: fewest that carry the logit difference"
    needs_model = True
    needs_grad = True  # attribution pushes the LD gradient through each dictionary's decoder
    topk_rows = False  # the error term keeps a top-k variant's patches exact; a full basis is the fair comparison

    def prepare(self, ctx: TaskContext) -> None:
        model, store = ctx.model, ctx.store
        bos, pad = special_ids(model)
        ds = make_dataset(self.n_prompts, model.tokenize, stream(ctx.seed, "ioi_patching"), bos=bos, pad=pad)
        self.ds = ds
        self._rows = torch.arange(len(ds))

        clean_logits = self._last(torch.cat([model.logits(b) for b in ds.clean.split(self.batch_size)]))
        ld_clean = self._ld(clean_logits)
        # The counterfactual run (base) with the gradient of the summed logit difference at the hook.
        cf_logits, grad = [], []
        for b, io, s, last in zip(ds.counterfactual.split(self.batch_size), ds.io.split(self.batch_size),
                                  ds.s.split(self.batch_size), ds.last.split(self.batch_size), strict=True):
            r = torch.arange(len(b))
            logits, g = model.hook_gradient(b, ctx.hook, lambda lg, r=r, io=io, s=s, last=last:
                                            (lg[r, last, io] - lg[r, last, s]).sum())
            cf_logits.append(logits[r, last].float())
            grad.append(g)
        cf_logits_t = torch.cat(cf_logits)
        self._grad = torch.cat(grad).to(ctx.device)
        self._clean = CleanDistribution(F.log_softmax(clean_logits.float(), -1))  # `[N, V]`
        # per prompt `[N]` (float64): the logit differences of both runs and the counterfactual's KL
        self._ld_base_i = self._ld(cf_logits_t).double().numpy()
        self._ld_target_i = ld_clean.double().numpy()
        self._kl_base_i = self._kl(F.log_softmax(cf_logits_t, -1))
        self._ld_base, self._ld_target = float(self._ld_base_i.mean()), float(self._ld_target_i.mean())
        self._kl_base = float(self._kl_base_i.mean())
        self._ids = [f"ioi/{i}" for i in range(len(ds))]  # seeded prompts: the same units for every dictionary

        self._x_base = torch.cat([model.activations(b, ctx.hook) for b in ds.counterfactual.split(self.batch_size)])
        self._x_target = torch.cat([model.activations(b, ctx.hook) for b in ds.clean.split(self.batch_size)])
        self._x_base, self._x_target = self._x_base.to(ctx.device), self._x_target.to(ctx.device)
        keep = lambda tokens, x: store.exclusion.mask(tokens, x.cpu(), model.special_ids, store.reference_norm)  # noqa: E731
        self._real = ds.real()
        self._editable = (self._real & keep(ds.counterfactual, self._x_base) & keep(ds.clean, self._x_target)).to(ctx.device)
        self._full_edit_i = edit_norms(self._x_target - self._x_base, self._real.to(ctx.device)).double().cpu().numpy()
        self._full_edit = float(self._full_edit_i.mean())

        top1 = clean_logits.argmax(-1) == ds.io
        self.model_stats = {
            "logit_diff": self._ld_target, "logit_diff_sd": float(ld_clean.std()),
            "accuracy": float((ld_clean > 0).float().mean()), "top1_rate": float(top1.float().mean()),
            "logit_diff_counterfactual": self._ld_base, "kl_counterfactual": self._kl_base,
            "abba_logit_diff": float(ld_clean[[o == "ABBA" for o in ds.order]].mean()),
            "baba_logit_diff": float(ld_clean[[o == "BABA" for o in ds.order]].mean()),
            "n_prompts": len(ds), "n_editable_positions": int(self._editable.sum()),
            "examples": list(ds.texts[:4]), "full_edit_norm": self._full_edit,
            "logit_diff_interval": self._interval(Evidence("prompt", self._ids, "mean", {"x": self._ld_target_i}),
                                                  ctx.seed),
            "accuracy_interval": self._interval(Evidence("prompt", self._ids, "mean",
                                                         {"x": (self._ld_target_i > 0).astype(float)}), ctx.seed),
        }
        # What the seeded prompts cover: how many, each template in each order, the names drawn from.
        pairs = Counter(zip(ds.template, ds.order, strict=True))
        self.prompts = {"n_prompts": len(ds), "seed_tag": "ioi_patching", "n_names": len(ds.names),
                        "order": {o: ds.order.count(o) for o in ("ABBA", "BABA")},
                        "templates": [{"template": TEMPLATES[t], "ABBA": pairs[(t, "ABBA")], "BABA": pairs[(t, "BABA")]}
                                      for t in sorted(set(ds.template))]}
        self.does_task = (self._ld_target >= self.min_logit_diff and self.model_stats["accuracy"] >= self.min_accuracy
                          and self._ld_target > self._ld_base)

    def _last(self, logits: torch.Tensor) -> torch.Tensor:
        """`[N, T, V]` -> the prediction for the name, `[N, V]`."""
        return logits[self._rows, self.ds.last].float()

    def _ld(self, last_logits: torch.Tensor) -> torch.Tensor:
        """The clean answer's logit difference IO - S (A - B) per prompt, `[N]`, for any run."""
        return last_logits[self._rows, self.ds.io] - last_logits[self._rows, self.ds.s]

    def _kl(self, logp: torch.Tensor) -> np.ndarray:
        """KL(p_clean || p) at the last position per prompt `[N]` (float64, rounding below 0 clipped); logp `[N, V]`."""
        return self._clean.kl(logp).clamp_min(0.0).cpu().numpy()

    @staticmethod
    def _interval(ev: Evidence, seed: int) -> dict[str, Any]:
        info = interval(ev, seed)
        return {"interval": list(info.interval) if info.interval else None, **info.to_json()}

    def measure(self, ctx: TaskContext, x: torch.Tensor) -> tuple[float, float, dict[str, np.ndarray]]:
        """Patched activations at the hook `[N, T, d]` -> (mean KL to the clean run, recovered share of the LD
        change, per prompt {"kl": `[N]`, "ld": `[N]`})."""
        logits = []
        for start in range(0, len(self.ds), self.batch_size):
            tokens = self.ds.counterfactual[start:start + self.batch_size]
            patch = x[start:start + self.batch_size]
            # the edit replaces the whole activation: any clean one of the right shape lets the pass start at the hook
            logits.append(ctx.model.logits(tokens, ctx.hook, lambda act, patch=patch: patch.to(act),
                                           clean=self._x_base[start:start + self.batch_size]))
        last = self._last(torch.cat(logits))
        ld, kl = self._ld(last).double().cpu().numpy(), self._kl(F.log_softmax(last, -1))
        recovery = (float(ld.mean()) - self._ld_base) / (self._ld_target - self._ld_base)
        return float(kl.mean()), recovery, {"kl": kl, "ld": ld}

    def patcher(self, dictionary: Dictionary, ctx: TaskContext) -> Patcher:
        return Patcher(dictionary.to(ctx.device), self._x_base, self._x_target, self._editable)

    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        details: dict[str, Any] = {"model": self.model_stats, "board_notes": [self._note(ctx)]}
        if not self.does_task:
            details["skipped"] = "the model does not do IOI on these prompts: no patching curves"
            return TaskOutput({}, details)
        patcher = self.patcher(dictionary, ctx)
        # Moving a feature should raise LD (towards the clean run): rank by that signed, linearised effect.
        attribution = patcher.attribution(self._grad)
        moveable = torch.nonzero(patcher.differs).flatten()
        ranking = moveable[torch.argsort(-attribution[moveable], stable=True)]
        curves = Curves(patcher, lambda x: self.measure(ctx, x), self._real.to(ctx.device))
        expected = max(len(ranking), 1).bit_length() + 1 + self.greedy_passes * len(self.greedy_targets)
        progress = (lambda: ctx.progress(curves.passes, expected)) if ctx.progress else (lambda: None)
        points = []
        for p in curves.by_ranking(ranking):
            points.append(p)
            progress()
        everything = points[-1] if points else Point(0, self._kl_base, 0.0, 0.0, {
            "kl": self._kl_base_i, "ld": self._ld_base_i, "edit": np.zeros(len(self._ids))})

        greedy: dict[float, Point | None] = {}
        for target in self.greedy_targets:
            seed = smallest_k(points, target)
            greedy[target] = None if seed is None else (curves.prune(ranking, seed.k, target, self.greedy_passes) or seed)
            progress()

        n = len(self._ids)

        def k_metric(point: Point | None, how: str, target: float) -> Metric:
            return Metric.without_interval(None if point is None else float(point.k), False,  # type: ignore[arg-type]
                                           f"fewest features {how} recovering {target:.0%} of the IO-S logit "
                                           "difference (none: not reached with every feature moved)",
                                           NO_INTERVAL, unit="prompt", n=n)

        def ratio(num: np.ndarray, den: np.ndarray, description: str) -> Metric:
            ev = Evidence("prompt", self._ids, "ratio", {"num": num, "den": den}, {}, SOURCES)
            return Metric.of(ev, False, description, seed=ctx.seed)

        def edit_metric(point: Point | None, t: float) -> Metric:
            description = f"mean ||Δactivation|| at k{round(100 * t)}, relative to the whole clean - counterfactual edit"
            if point is None:
                return Metric.without_interval(None, False, description,  # type: ignore[arg-type]
                                               f"k{round(100 * t)} not reached", unit="prompt", n=n)
            return ratio(point.per_prompt["edit"], self._full_edit_i, description)

        k50, k90 = smallest_k(points, 0.5), smallest_k(points, 0.9)
        # The area is linear in the KL at each k: per prompt, num = sum_j w_j KL_ij (j = 0: the counterfactual run),
        # den = KL_i0, so sum(num) / sum(den) is exactly `kl_auc` of the mean curve.
        k_max = 2 * ctx.store.d_model
        w = kl_auc_weights([p.k for p in points], k_max)
        kl_num = w[0] * self._kl_base_i + sum((wj * p.per_prompt["kl"] for wj, p in zip(w[1:], points, strict=True)),
                                              np.zeros(n))
        metrics = {
            "k50": k_metric(k50, "(top by attribution, k = 1, 2, 4, ...)", 0.5),
            "k90": k_metric(k90, "(top by attribution, k = 1, 2, 4, ...)", 0.9),
            **{f"greedy_k{round(100 * t)}": k_metric(p, "(greedy threshold search)", t) for t, p in greedy.items()},
            "kl_auc": ratio(kl_num, self._kl_base_i, "area under KL(clean || patched)/KL(clean || counterfactual) vs "
                                                     "log2(1+k), k up to 2 d_model"),
            "edit_k50": edit_metric(k50, 0.5), "edit_k90": edit_metric(k90, 0.9),
            "error_effect": ratio(self._ld_target_i - everything.per_prompt["ld"], self._ld_target_i - self._ld_base_i,
                                  "share of the LD change left to the error term with every feature moved"),
        }
        details.update({
            "attribution_curve": [dict(p.to_json(), recovery_interval=self._recovery_interval(p, ctx.seed))
                                  for p in points],
            "prompts": self.prompts,
            "interval_note": "bootstrap over prompts with the features, their ranking and the chosen k held fixed: "
                             "prompt-sample variance only",
            "greedy": {str(t): None if p is None else p.to_json() for t, p in greedy.items()},
            "n_moveable_features": len(ranking), "forward_passes": curves.passes,
            "top_features": [{"feature": int(i), "attribution": float(attribution[i])} for i in ranking[:20]],
            "full_edit_norm": self._full_edit,
        })
        return TaskOutput(metrics, details)

    def _recovery_interval(self, p: Point, seed: int) -> list[float] | None:
        """95% interval of a curve point's recovered share of the LD change, over prompts."""
        ev = Evidence("prompt", self._ids, "ratio", {"num": p.per_prompt["ld"] - self._ld_base_i,
                                                     "den": self._ld_target_i - self._ld_base_i}, {}, SOURCES)
        iv = interval(ev, seed).interval
        return list(iv) if iv else None

    def _note(self, ctx: TaskContext) -> str:
        s = self.model_stats
        verdict = "does IOI" if self.does_task else "does NOT do IOI (no curves)"
        return (f"ioi_patching: the model {verdict} at {ctx.hook}: clean logit diff IO-S {s['logit_diff']:.2f} "
                f"(LD > 0 on {s['accuracy']:.0%}, top-1 {s['top1_rate']:.0%} of {s['n_prompts']} prompts); k = features "
                "moved from the counterfactual to the clean run, error term kept")
