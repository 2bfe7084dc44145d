"""Which excerpts of the held-out split a feature is explained from and scored on; they never overlap.

A feature is a per-token activation array over the eval split, `[n_contexts, ctx_len]`, zero where the store's
exclusion rule drops a token. Each excerpt is a window of `window` tokens from one context, with the context's
strongest activation three quarters of the way in (the model reads left to right, so the cause of a firing lies
mostly before it). Every excerpt of a feature comes from a different context.
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


@dataclass(frozen=True)
class Examples:
    explain: list[Excerpt]  # top-activating: what the explainer reads
    top: list[Excerpt]  # other top-activating contexts: positives of detection, half of simulation
    random: list[Excerpt]  # uniformly random windows: negatives of detection
    sampled: list[Excerpt]  # random contexts where the feature fires: the other half of simulation (the paper's)


@dataclass(frozen=True)
class Sizes:
    window: int = 16
    n_explain: int = 5
    n_top: int = 2
    n_random: int = 2
    n_sampled: int = 2

    @property
    def min_contexts(self) -> int:
        """A feature firing in fewer contexts cannot be both explained and scored."""
        return self.n_explain + self.n_top


def _window(acts: np.ndarray, tokens: np.ndarray, context: int, start: int, window: int) -> Excerpt:
    return Excerpt(context, start, tokens[context, start : start + window].copy(),
                   acts[context, start : start + window].astype(np.float32))


def around_peak(acts: np.ndarray, tokens: np.ndarray, context: int, window: int) -> Excerpt:
    peak = int(np.argmax(acts[context]))
    start = int(np.clip(peak - (3 * window) // 4, 0, acts.shape[1] - window))
    return _window(acts, tokens, context, start, window)


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
    rest = order[len(pool) :]
    sampled = rng.choice(rest, size=min(sizes.n_sampled, len(rest)), replace=False) if len(rest) else rest
    unused = np.setdiff1d(np.arange(n_ctx), np.concatenate([pool, sampled]))
    random = rng.choice(unused, size=min(sizes.n_random, len(unused)), replace=False)
    starts = rng.integers(0, ctx_len - window + 1, size=len(random))
    return Examples(
        explain=[around_peak(acts, tokens, int(c), window) for c in explain],
        top=[around_peak(acts, tokens, int(c), window) for c in top],
        random=[_window(acts, tokens, int(c), int(s), window) for c, s in zip(random, starts, strict=True)],
        sampled=[around_peak(acts, tokens, int(c), window) for c in sampled],
    )
