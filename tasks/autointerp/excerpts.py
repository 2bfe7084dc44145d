"""Which excerpts of the held-out split a feature is explained from and scored on; they never overlap.

A feature is a per-token activation array over the eval split, `[n_contexts, ctx_len]`, zero where the store's
exclusion rule drops a token. Every excerpt of a feature comes from a different context and is a window of
`window` tokens:
- activating excerpts have the context's strongest activation three quarters of the way in (the model reads left
  to right, so the cause of a firing lies mostly before it). The `n_explain + n_top` strongest contexts are split
  at random between the explainer and the scorer's top excerpts; `n_quantile` more are drawn one per stratum of
  equal size over the remaining firing contexts ranked by peak (delphi's quantile sampling), so the scores cover
  the whole activation distribution, not only its top;
- non-firing excerpts are windows where the feature is zero on every token, one per context, from contexts not
  used above. A feature that fires almost everywhere (a dense basis) may have too few such windows: its
  negatives are then the quietest windows of random contexts, and the excerpt's `drawn` and the result say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Excerpt:
    context: int
    start: int
    tokens: np.ndarray  # int `[window]`
    acts: np.ndarray  # float32 `[window]`
    drawn: str = ""  # how: "top", "quantile i/n" (stratum of the peak ranking, 1 = strongest), "non-firing", "quietest"


@dataclass(frozen=True)
class Examples:
    explain: list[Excerpt]  # top-activating: what the explainer reads
    activating: list[Excerpt]  # held-out top, then quantile-sampled: detection's positives, fuzzing, simulation
    non_firing: list[Excerpt]  # detection's negatives

    @property
    def quietest(self) -> int:
        """How many negatives are quietest windows rather than windows where the feature never fires."""
        return sum(e.drawn == "quietest" for e in self.non_firing)


@dataclass(frozen=True)
class Sizes:
    window: int = 16
    n_explain: int = 5
    n_top: int = 4
    n_quantile: int = 6
    n_non_firing: int = 10
    n_fuzz: int = 6  # activating excerpts shown with marks, half of them with the marks moved
    n_simulate: int = 2  # activating excerpts simulated token by token (top and quantile-sampled alternately)

    @property
    def n_activating(self) -> int:
        return self.n_top + self.n_quantile

    @property
    def min_contexts(self) -> int:
        """A feature firing in fewer contexts cannot be both explained and scored on all its activating excerpts."""
        return self.n_explain + self.n_activating

    @property
    def samples_per_feature(self) -> int:
        """Scoring requests per explained feature."""
        return self.n_activating + self.n_non_firing + min(self.n_fuzz, self.n_activating) \
            + min(self.n_simulate, self.n_activating)


def _window(acts: np.ndarray, tokens: np.ndarray, context: int, start: int, window: int, drawn: str) -> Excerpt:
    return Excerpt(context, start, tokens[context, start : start + window].copy(),
                   acts[context, start : start + window].astype(np.float32), drawn)


def around_peak(acts: np.ndarray, tokens: np.ndarray, context: int, window: int, drawn: str = "top") -> Excerpt:
    peak = int(np.argmax(acts[context]))
    start = int(np.clip(peak - (3 * window) // 4, 0, acts.shape[1] - window))
    return _window(acts, tokens, context, start, window, drawn)


def stratified(order: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """One item drawn uniformly from each of `n` consecutive strata of `order` (equal sizes, up to rounding):
    [(item, stratum 1..n)]. Fewer items than strata: every item, each its own stratum."""
    if len(order) <= n:
        return [(int(c), i + 1) for i, c in enumerate(order)]
    edges = np.linspace(0, len(order), n + 1).round().astype(int)
    return [(int(order[rng.integers(lo, hi)]), i + 1) for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:],
                                                                                        strict=True))]


def non_firing_windows(acts: np.ndarray, tokens: np.ndarray, contexts: np.ndarray, n: int, window: int,
                       rng: np.random.Generator) -> list[Excerpt]:
    """`n` windows from distinct `contexts` where the feature is zero (<= 0) throughout, each at a random such
    start; if fewer contexts hold one, the rest are the quietest windows (lowest peak) of the remaining contexts."""
    if n == 0 or len(contexts) == 0:
        return []
    peaks = np.lib.stride_tricks.sliding_window_view(acts[contexts], window, axis=1).max(-1)  # [contexts, starts]
    silent = peaks <= 0
    has = silent.any(1)
    quiet = rng.permutation(np.flatnonzero(has))[:n]
    out = []
    for i in quiet:
        starts = np.flatnonzero(silent[i])
        out.append(_window(acts, tokens, int(contexts[i]), int(rng.choice(starts)), window, "non-firing"))
    if len(out) < n:
        rest = rng.permutation(np.flatnonzero(~has))
        lowest = peaks[rest].min(1)
        for i in rest[np.argsort(lowest, kind="stable")][: n - len(out)]:
            out.append(_window(acts, tokens, int(contexts[i]), int(np.argmin(peaks[i])), window, "quietest"))
    return out


def sample_examples(acts: np.ndarray, tokens: np.ndarray, sizes: Sizes, rng: np.random.Generator) -> Examples | None:
    """acts float `[n_contexts, ctx_len]`, tokens int `[n_contexts, ctx_len]` -> excerpts, or None if too rare."""
    n_ctx, ctx_len = acts.shape
    window = min(sizes.window, ctx_len)
    peak = acts.max(1)
    firing = np.flatnonzero(peak > 0)
    if len(firing) < sizes.min_contexts:
        return None
    # Strongest first; equal peaks (a control that is 1 on a token) in random order, not the split's order.
    order = firing[np.lexsort((rng.random(len(firing)), -peak[firing]))]
    pool = order[: sizes.n_explain + sizes.n_top]
    shuffled = pool[rng.permutation(len(pool))]
    explain, top = shuffled[: sizes.n_explain], shuffled[sizes.n_explain :]
    quantile = stratified(order[len(pool) :], sizes.n_quantile, rng)
    used = np.concatenate([pool, np.array([c for c, _ in quantile], int)])
    unused = rng.permutation(np.setdiff1d(np.arange(n_ctx), used))
    return Examples(
        explain=[around_peak(acts, tokens, int(c), window) for c in explain],
        activating=[around_peak(acts, tokens, int(c), window) for c in top]
        + [around_peak(acts, tokens, c, window, f"quantile {i}/{sizes.n_quantile}") for c, i in quantile],
        non_firing=non_firing_windows(acts, tokens, unused, sizes.n_non_firing, window, rng),
    )
