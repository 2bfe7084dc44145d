"""`stability`: does a method find the same directions when fitted again with another seed?

For a method fitted with several seeds (`--seeds`), each seed's dictionary is compared with the others'
(`ctx.siblings()`), direction by direction (`directions`, `[d_dict, d_in]`, unit rows):

    mean_max_cos     mean over this dictionary's directions of the max |cos| with any direction of the other seed
    pw_mcc           mean |cos| of a one-to-one (Hungarian) matching of the two sets of directions (Song et al.
                     2025: `linear_sum_assignment` on -|cos|)
    shared_fraction  fraction of directions whose Hungarian match has |cos| > `threshold` (0.7; Paulo & Belrose
                     2025 find ~30% of one SAE's latents shared between two seeds)

each averaged over the siblings, and beside each its value for two independent draws of Gaussian unit directions of
the same shape (`random_*`): what chance agreement looks like at this width and dimension (in 576 dimensions two
random sets of 2,304 directions already reach a mean max |cos| of 0.15).

|cos| makes the sign irrelevant, so a signed dense basis (a direction and its negation as two codes; see
`LinearDictionary`) is cut to its lines first: otherwise every direction would also match its own negation. The
units of the intervals are this dictionary's directions; the real units of a stability claim are the seeds, which
are few (2–5), so the interval says how well the directions pin the mean down, not how another set of seeds would
vary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from bench.dictionary import Dictionary
from bench.errors import BenchError
from bench.seeds import rng
from bench.specs import fraction
from bench.stats import Evidence
from tasks.base import Metric, Task, TaskContext, TaskOutput

STATISTICS = ("mean_max_cos", "pw_mcc", "shared_fraction")


def lines(dictionary: Dictionary) -> torch.Tensor:
    """The dictionary's directions up to sign: `[n_lines, d_in]` float32 unit rows (zero rows stay zero).

    A signed dense basis lists each direction and then its negation (`directions` = [D; -D]): only D is kept.
    Checked on the directions themselves rather than on the class, so a wrapped or plugin dictionary with the same
    layout is cut too.
    """
    d = dictionary.directions.detach().float().cpu()
    half = d.shape[0] // 2
    if d.shape[0] % 2 == 0 and half and torch.equal(d[half:], -d[:half]):
        d = d[:half]
    return torch.nn.functional.normalize(d, dim=-1)


def agreement(a: torch.Tensor, b: torch.Tensor, threshold: float = 0.7) -> dict[str, np.ndarray]:
    """Per direction of `a`, its agreement with the set `b`. a `[n, d]`, b `[m, d]`, unit rows.

    Returns float64 arrays `[n]`: `mean_max_cos` (max |cos| with any row of b), `pw_mcc` (|cos| with its partner in
    the one-to-one matching that maximises the total |cos|; 0 for rows left without a partner when n > m) and
    `shared_fraction` (1 where that partner's |cos| > threshold). The matching is scipy's exact Hungarian
    assignment: a greedy best-first matching can be worse (see tests/test_stability.py).
    """
    cos = (a.float() @ b.float().T).abs().clamp(max=1.0).double().numpy()  # [n, m]
    rows, cols = linear_sum_assignment(cos, maximize=True)
    matched = np.zeros(a.shape[0])
    matched[rows] = cos[rows, cols]
    return {"mean_max_cos": cos.max(1) if cos.shape[1] else np.zeros(a.shape[0]), "pw_mcc": matched,
            "shared_fraction": (matched > threshold).astype(float)}


def random_directions(n: int, d: int, g: np.random.Generator) -> torch.Tensor:
    """`[n, d]` Gaussian directions, unit rows."""
    return torch.nn.functional.normalize(torch.from_numpy(g.standard_normal((n, d))).float(), dim=-1)


@dataclass
class Stability(Task):
    threshold: float = fraction(0.7)  # |cos| above which a matched pair counts as the same feature (Paulo & Belrose 2025)

    name = "stability"
    description = "agreement of a method's directions across seeds (max |cos|, Hungarian-matched |cos|, shared share)"
    needs_model = False
    topk_rows = False  # a top-k variant has the same directions
    depends_on_model = False  # compares dictionaries only: no activations read
    cross_seed = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._random: dict[tuple[int, int, int], dict[str, np.ndarray]] = {}  # (n, d, seed) -> per-direction values

    def random_agreement(self, n: int, d: int, seed: int) -> dict[str, np.ndarray]:
        """The same statistics for two independent sets of n random directions in d dimensions: once per shape."""
        key = (n, d, seed)
        if key not in self._random:
            g = rng(seed, f"stability:random:{n}x{d}")
            self._random[key] = agreement(random_directions(n, d, g), random_directions(n, d, g), self.threshold)
        return self._random[key]

    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        siblings = ctx.siblings() if ctx.siblings is not None else None
        if not siblings:
            raise BenchError("stability compares a method's dictionaries across seeds: run it with --seeds and at "
                             "least two seeds (e.g. --seeds 0,1,2), on a seeded method")
        mine = lines(dictionary)
        n, d = mine.shape
        per_sibling = []
        for other in siblings:
            theirs = lines(other)
            if theirs.shape[1] != d:
                raise BenchError(f"stability: a sibling dictionary has d_in {theirs.shape[1]}, this one {d}; "
                                 "refit the run's seeds on one model and hook")
            per_sibling.append(agreement(mine, theirs, self.threshold))
        chance = self.random_agreement(n, d, ctx.seed)
        ids = [str(i) for i in range(n)]
        what = {"mean_max_cos": "max |cos| of each direction with any direction of another seed",
                "pw_mcc": "|cos| of each direction with its Hungarian-matched direction of another seed",
                "shared_fraction": f"share of directions whose Hungarian match has |cos| > {self.threshold}"}
        caveat = (f"; mean over {n} directions and {len(siblings)} other seed(s). Interval over directions: the "
                  "seeds are the real unit and are few")
        metrics: dict[str, Metric] = {}
        for stat in STATISTICS:
            x = np.mean([p[stat] for p in per_sibling], axis=0)  # [n]: averaged over the siblings
            metrics[stat] = Metric.of(Evidence("feature", ids, "mean", {"x": x}, sources=("features",)), True,
                                      what[stat] + caveat, seed=ctx.seed)
        for stat in STATISTICS:
            metrics[f"random_{stat}"] = Metric.of(
                Evidence("feature", ids, "mean", {"x": chance[stat]}, sources=("features",)), True,
                f"reference: {what[stat].replace('another seed', 'an independent set')}, for Gaussian random "
                f"directions of this shape ({n} x {d}); chance agreement", seed=ctx.seed)
        details: dict[str, Any] = {
            "n_directions": n, "d_in": d, "deduplicated_signs": n != dictionary.d_dict,
            "n_siblings": len(siblings), "threshold": self.threshold,
            "per_sibling": [{stat: float(p[stat].mean()) for stat in STATISTICS} for p in per_sibling],
        }
        return TaskOutput(metrics, details)
