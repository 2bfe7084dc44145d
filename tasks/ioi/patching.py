"""Patching through a dictionary: move a set of features from the base run's values to the target run's.

At the hook, base and target activations x_b, x_t (`[N, T, d]`) are encoded, c_b = encode(x_b), c_t = encode(x_t),
and for a feature set S (a bool mask over the dictionary) with the error node on or off:

    x(S, err) = x_b + decode(c_S) - decode(c_b) + err * (e_t - e_b),     c_S = c_t on S, c_b elsewhere,

where e = x - decode(encode(x)) is each run's reconstruction error. The base run's error is kept while features
move, so x(∅, off) = x_b and x(all, on) = x_t: the two endpoints are the real runs, not reconstructions. Positions
the dictionary does not see (excluded attention sinks, padding) belong to the error node. A feature moves at every
position at once: it is one unit of the model, not one per token.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from bench.dictionary import Dictionary


class Patcher:
    """The patched activations of one dictionary on one prompt set.

    x_base, x_target: `[N, T, d]`; editable: bool `[N, T]`, the positions the dictionary encodes.
    """

    def __init__(self, dictionary: Dictionary, x_base: torch.Tensor, x_target: torch.Tensor,
                 editable: torch.Tensor) -> None:
        self.dictionary = dictionary
        self.x_base, self.x_target, self.editable = x_base, x_target, editable
        with torch.no_grad():
            self.c_base = dictionary.encode(x_base[editable])  # `[M, d_dict]`, M editable positions
            self.c_target = dictionary.encode(x_target[editable])
            self.rec_base = dictionary.decode(self.c_base)  # `[M, d]`
            err_base = x_base[editable] - self.rec_base
            err_target = x_target[editable] - dictionary.decode(self.c_target)
        self.error_move = x_target - x_base  # the error node: everything the features do not carry
        self.error_move[editable] = err_target - err_base
        self.differs = (self.c_target != self.c_base).any(0)  # `[d_dict]` features the edit can move at all

    @property
    def d_dict(self) -> int:
        return self.c_base.shape[1]

    def activation(self, features: torch.Tensor, move_error: bool = False) -> torch.Tensor:
        """features: bool `[d_dict]` -> patched activations `[N, T, d]`."""
        out = self.x_base.clone()
        if bool(features.any()):
            with torch.no_grad():
                codes = torch.where(features, self.c_target, self.c_base)
                out[self.editable] += self.dictionary.decode(codes) - self.rec_base
        if move_error:
            out += self.error_move
        return out

    def attribution(self, grad: torch.Tensor) -> torch.Tensor:
        """Gradient x code difference per feature: the linearised change of the metric when the feature moves.

        grad: d metric / d activation at the base run, `[N, T, d]` -> `[d_dict]`."""
        codes = self.c_base.clone().requires_grad_(True)
        with torch.enable_grad():
            (self.dictionary.decode(codes) * grad[self.editable]).sum().backward()
        return ((self.c_target - self.c_base) * codes.grad).sum(0).detach()

    def mask(self, idx: torch.Tensor | list[int]) -> torch.Tensor:
        m = torch.zeros(self.d_dict, dtype=torch.bool)
        m[torch.as_tensor(idx, dtype=torch.long)] = True
        return m


@dataclass(frozen=True)
class Point:
    """One patched run: k features moved (error node kept), its distance from the target and the edit's size.

    `per_prompt` keeps what the means are made of, each `[N]`: "kl" (KL at the last position), "ld" (the clean
    answer's logit difference) and "edit" (the edit's norm), where the measure provides them: the task's
    intervals resample prompts from these."""

    k: int
    kl: float  # mean over prompts of KL(p_target || p_patched) at the last position
    recovery: float  # (LD_patched - LD_base) / (LD_target - LD_base), LD the mean logit difference IO - S
    edit: float  # mean over prompts of ||x_patched - x_base|| (over the prompt's positions and dimensions)
    per_prompt: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict:
        return {"k": self.k, "kl": self.kl, "recovery": self.recovery, "edit": self.edit}


# patched activations -> (kl, recovery, per-prompt readings {"kl": `[N]`, "ld": `[N]`}, possibly empty)
Measure = Callable[[torch.Tensor], tuple[float, float, dict[str, np.ndarray]]]


def edit_norms(delta: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """delta `[N, T, d]`, real bool `[N, T]` -> each prompt's edit norm on its real positions, `[N]`."""
    return (delta * real[..., None]).flatten(1).norm(dim=1)


def edit_norm(delta: torch.Tensor, real: torch.Tensor) -> float:
    """delta `[N, T, d]`, real bool `[N, T]` -> mean over prompts of the edit's norm on real positions."""
    return float(edit_norms(delta, real).mean())


class Curves:
    """Evaluates feature sets of one dictionary (each evaluation is one forward pass over the prompts)."""

    def __init__(self, patcher: Patcher, measure: Measure, real: torch.Tensor) -> None:
        self.patcher, self.measure, self.real = patcher, measure, real
        self.passes = 0

    def point(self, features: torch.Tensor) -> Point:
        x = self.patcher.activation(features)
        kl, recovery, per_prompt = self.measure(x)
        self.passes += 1
        edits = edit_norms(x - self.patcher.x_base, self.real).double().cpu().numpy()
        return Point(int(features.sum()), kl, recovery, float(edits.mean()), {**per_prompt, "edit": edits})

    def by_ranking(self, ranking: torch.Tensor) -> Iterator[Point]:
        """Points at k = 1, 2, 4, ... and k = all moveable features, moving the top k of `ranking`."""
        n = len(ranking)
        for k in sorted({2**j for j in range(max(n, 1).bit_length()) if 2**j < n} | ({n} if n else set())):
            yield self.point(self.patcher.mask(ranking[:k]))

    def prune(self, ranking: torch.Tensor, start: int, target: float, budget: int) -> Point | None:
        """Greedy threshold search seeded by the ranking: from its top `start` features, try dropping blocks of the
        weakest (halving a block when dropping it loses too much) while recovery stays >= target; `budget` passes.

        Returns the final set's point, or None when no block could be dropped (the set stays the prefix)."""
        kept = [int(i) for i in ranking[:start]]
        weakest_first = kept[::-1]
        queue = deque([weakest_first[: len(kept) // 2], weakest_first[len(kept) // 2:]])
        best: Point | None = None
        used = 0
        while queue and used < budget:
            block = queue.popleft()
            if not block:
                continue
            drop = set(block)
            trial = [i for i in kept if i not in drop]
            if not trial:  # never test the empty set: split the block, or give up on a single feature
                if len(block) > 1:
                    queue.extendleft([block[len(block) // 2:], block[: len(block) // 2]])
                continue
            p = self.point(self.patcher.mask(trial))
            used += 1
            if p.recovery >= target:
                kept, best = trial, p
            elif len(block) > 1:
                queue.extendleft([block[len(block) // 2:], block[: len(block) // 2]])
        return best


def smallest_k(points: list[Point], fraction: float) -> Point | None:
    """The point with the fewest features whose recovery reaches `fraction`, if any."""
    hits = [p for p in points if p.recovery >= fraction]
    return min(hits, key=lambda p: p.k) if hits else None


def kl_auc_weights(ks: list[int], k_max: int) -> np.ndarray:
    """The curve's area as a linear function of its heights: weights `[1 + len(ks)]` such that
    kl_auc = weights @ [KL(0), KL(k_1), ...] / KL(0). Fixed by the ks alone, so a mean of per-prompt KLs at each k
    turns the area into a ratio of per-prompt sums (what the task's interval resamples)."""
    scale = np.log2(1.0 + k_max)
    xs = np.log2(1.0 + np.array([0, *ks], dtype=np.float64)) / scale
    order = np.argsort(xs, kind="stable")
    grid = np.union1d(xs[xs < 1.0], [1.0])
    weights = np.zeros(len(xs))
    for j in range(len(xs)):  # the area of the j-th unit curve (interpolation and trapezoids are linear)
        y = np.interp(grid, xs[order], np.eye(len(xs))[j][order])
        weights[j] = np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(grid))
    return weights


def kl_auc(points: list[Point], kl_base: float, k_max: int) -> float:
    """Area under KL(k) / KL(0) against log2(1 + k) / log2(1 + k_max), k from 0 to k_max (lower is better).

    Between evaluated points KL is interpolated linearly on that axis; past the last point it stays there, so
    methods with any number of features are read on the same axis."""
    weights = kl_auc_weights([p.k for p in points], k_max)
    return float(weights @ np.array([1.0] + [p.kl / kl_base for p in points], dtype=np.float64))
