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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bench.dictionary import Dictionary
from bench.seeds import stream
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.ioi.dataset import make_dataset
from tasks.ioi.patching import Curves, Patcher, Point, edit_norm, kl_auc, smallest_k
from tasks.prompts import special_ids


@dataclass
class IOIPatching(Task):
    n_prompts: int = 16  # half ABBA, half BABA
    batch_size: int = 32  # prompts per forward pass
    greedy_targets: tuple[float, ...] = (0.5, 0.9)  # recovery each greedy search must keep
    greedy_passes: int = 6  # forward passes each greedy search may spend
    min_logit_diff: float = 1.0  # the model "does IOI" if its mean clean LD reaches this...
    min_accuracy: float = 0.7  # ...and LD > 0 on at least this share of prompts

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
        self._logp_target = F.log_softmax(clean_logits.float(), -1)
        self._ld_base = float(self._ld(cf_logits_t).mean())
        self._ld_target = float(ld_clean.mean())
        self._kl_base = self._kl(F.log_softmax(cf_logits_t, -1))

        self._x_base = torch.cat([model.activations(b, ctx.hook) for b in ds.counterfactual.split(self.batch_size)])
        self._x_target = torch.cat([model.activations(b, ctx.hook) for b in ds.clean.split(self.batch_size)])
        self._x_base, self._x_target = self._x_base.to(ctx.device), self._x_target.to(ctx.device)
        keep = lambda tokens, x: store.exclusion.mask(tokens, x.cpu(), model.special_ids, store.reference_norm)  # noqa: E731
        self._real = ds.real()
        self._editable = (self._real & keep(ds.counterfactual, self._x_base) & keep(ds.clean, self._x_target)).to(ctx.device)
        self._full_edit = edit_norm(self._x_target - self._x_base, self._real.to(ctx.device))

        top1 = clean_logits.argmax(-1) == ds.io
        self.model_stats = {
            "logit_diff": self._ld_target, "logit_diff_sd": float(ld_clean.std()),
            "accuracy": float((ld_clean > 0).float().mean()), "top1_rate": float(top1.float().mean()),
            "logit_diff_counterfactual": self._ld_base, "kl_counterfactual": self._kl_base,
            "abba_logit_diff": float(ld_clean[[o == "ABBA" for o in ds.order]].mean()),
            "baba_logit_diff": float(ld_clean[[o == "BABA" for o in ds.order]].mean()),
            "n_prompts": len(ds), "n_editable_positions": int(self._editable.sum()),
            "examples": list(ds.texts[:4]), "full_edit_norm": self._full_edit,
        }
        self.does_task = (self._ld_target >= self.min_logit_diff and self.model_stats["accuracy"] >= self.min_accuracy
                          and self._ld_target > self._ld_base)

    def _last(self, logits: torch.Tensor) -> torch.Tensor:
        """`[N, T, V]` -> the prediction for the name, `[N, V]`."""
        return logits[self._rows, self.ds.last].float()

    def _ld(self, last_logits: torch.Tensor) -> torch.Tensor:
        """The clean answer's logit difference IO - S (A - B) per prompt, `[N]`, for any run."""
        return last_logits[self._rows, self.ds.io] - last_logits[self._rows, self.ds.s]

    def _kl(self, logp: torch.Tensor) -> float:
        """Mean over prompts of KL(p_clean || p) at the last position; logp `[N, V]`."""
        return max(float(F.kl_div(logp, self._logp_target, log_target=True, reduction="batchmean")), 0.0)

    def measure(self, ctx: TaskContext, x: torch.Tensor) -> tuple[float, float]:
        """Patched activations at the hook `[N, T, d]` -> (KL to the clean run, recovered share of the LD change)."""
        logits = []
        for start in range(0, len(self.ds), self.batch_size):
            tokens = self.ds.counterfactual[start:start + self.batch_size]
            patch = x[start:start + self.batch_size]
            logits.append(ctx.model.logits(tokens, ctx.hook, lambda act, patch=patch: patch.to(act)))
        last = self._last(torch.cat(logits))
        ld = float(self._ld(last).mean())
        return self._kl(F.log_softmax(last, -1)), (ld - self._ld_base) / (self._ld_target - self._ld_base)

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
        everything = points[-1] if points else Point(0, self._kl_base, 0.0, 0.0)

        greedy: dict[float, Point | None] = {}
        for target in self.greedy_targets:
            seed = smallest_k(points, target)
            greedy[target] = None if seed is None else (curves.prune(ranking, seed.k, target, self.greedy_passes) or seed)
            progress()

        def k_metric(point: Point | None, how: str, target: float) -> Metric:
            return Metric(None if point is None else float(point.k), False,  # type: ignore[arg-type]
                          description=f"fewest features {how} recovering {target:.0%} of the IO-S logit difference "
                                      "(none: not reached with every feature moved)")

        k50, k90 = smallest_k(points, 0.5), smallest_k(points, 0.9)
        metrics = {
            "k50": k_metric(k50, "(top by attribution, k = 1, 2, 4, ...)", 0.5),
            "k90": k_metric(k90, "(top by attribution, k = 1, 2, 4, ...)", 0.9),
            **{f"greedy_k{round(100 * t)}": k_metric(p, "(greedy threshold search)", t) for t, p in greedy.items()},
            "kl_auc": Metric(kl_auc(points, self._kl_base, 2 * ctx.store.d_model), False,
                             description="area under KL(clean || patched)/KL(clean || counterfactual) vs log2(1+k), "
                                         "k up to 2 d_model"),
            **{f"edit_k{round(100 * t)}": Metric(None if p is None else p.edit / self._full_edit, False,  # type: ignore[arg-type]
                                                  description=f"mean ||Δactivation|| at k{round(100 * t)}, relative to "
                                                              "the whole clean - counterfactual edit")
               for t, p in ((0.5, k50), (0.9, k90))},
            "error_effect": Metric(1.0 - everything.recovery, False,
                                   description="share of the LD change left to the error term with every feature moved"),
        }
        details.update({
            "attribution_curve": [p.to_json() for p in points],
            "greedy": {str(t): None if p is None else p.to_json() for t, p in greedy.items()},
            "n_moveable_features": len(ranking), "forward_passes": curves.passes,
            "top_features": [{"feature": int(i), "attribution": float(attribution[i])} for i in ranking[:20]],
            "full_edit_norm": self._full_edit,
        })
        return TaskOutput(metrics, details)

    def _note(self, ctx: TaskContext) -> str:
        s = self.model_stats
        verdict = "does IOI" if self.does_task else "does NOT do IOI (no curves)"
        return (f"ioi_patching: the model {verdict} at {ctx.hook}: clean logit diff IO-S {s['logit_diff']:.2f} "
                f"(LD > 0 on {s['accuracy']:.0%}, top-1 {s['top1_rate']:.0%} of {s['n_prompts']} prompts); k = features "
                "moved from the counterfactual to the clean run, error term kept")
