"""Judge calibration: can this judge tell a feature whose meaning we know from one that fires at random?

Known controls fire (value 1) exactly on one frequent word-like token of the held-out split; each has a shuffled
twin with the same number of firings at random kept positions. Both go through the same explain-and-score
pipeline as the methods' features. The separation (AUROC of the per-feature score, known vs shuffled) says how
much any score of this judge can be trusted; the known controls' detection samples also set the judge's
yes-probability threshold for balanced accuracy.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from bench.seeds import rng
from tasks.autointerp.pipeline import Feature, Scored
from tasks.autointerp.prompts import display
from tasks.autointerp.scoring import auroc, balanced_accuracy, best_threshold, finite_or_none


def control_features(tokens: np.ndarray, keep: np.ndarray, strings: Mapping[int, str], n: int, min_contexts: int,
                     seed: int, max_context_fraction: float = 0.4) -> tuple[list[Feature], list[Feature]]:
    """(known, shuffled) controls. tokens int and keep bool `[n_contexts, ctx_len]`.

    Candidates are word-like tokens (3+ letters) found in at least `min_contexts` contexts and at most
    `max_context_fraction` of them (so that random windows rarely contain them).
    """
    n_ctx = tokens.shape[0]
    per_context = np.concatenate([np.unique(tokens[c][keep[c]]) for c in range(n_ctx)])
    token_ids, counts = np.unique(per_context, return_counts=True)  # counts: contexts holding the token
    candidates = [int(t) for t, c in zip(token_ids, counts, strict=True)
                  if min_contexts <= c <= max_context_fraction * n_ctx
                  and (w := display(strings[int(t)]).strip()).isalpha() and len(w) >= 3]
    g = rng(seed, "autointerp:controls")
    chosen = sorted(g.choice(candidates, size=min(n, len(candidates)), replace=False).tolist()) if candidates else []
    known, shuffled = [], []
    kept = np.flatnonzero(keep.reshape(-1))
    for t in chosen:
        acts = ((tokens == t) & keep).astype(np.float32)
        label = repr(display(strings[t]))
        known.append(Feature(f"token {label}", acts))
        flat = np.zeros(acts.size, np.float32)
        flat[g.choice(kept, size=int(acts.sum()), replace=False)] = 1.0
        shuffled.append(Feature(f"shuffled {label}", flat.reshape(acts.shape)))
    return known, shuffled


def calibrate(known: list[Scored], shuffled: list[Scored]) -> dict[str, Any]:
    """Separation of known vs shuffled controls, and the judge's detection threshold."""
    out: dict[str, Any] = {"n_known": len(known), "n_shuffled": len(shuffled)}
    for score in ("detection_auroc", "fuzzing_auroc", "simulation"):
        k = np.array([getattr(s, score) for s in known], float)
        r = np.array([getattr(s, score) for s in shuffled], float)
        k, r = k[np.isfinite(k)], r[np.isfinite(r)]
        out[f"{score}_known"] = float(k.mean()) if len(k) else None
        out[f"{score}_shuffled"] = float(r.mean()) if len(r) else None
        sep = auroc(np.concatenate([k, r]), np.concatenate([np.ones(len(k), bool), np.zeros(len(r), bool)]))
        out[f"separation_{score}"] = finite_or_none(sep)
    probs = np.array([p for s in known for p in s.yes_probs], float)
    labels = np.array([y for s in known for y in s.labels], bool)
    threshold = best_threshold(probs, labels) if len(probs) else 0.5
    out["threshold"] = threshold
    out["balanced_accuracy_known_at_threshold"] = finite_or_none(balanced_accuracy(probs, labels, threshold))
    out["balanced_accuracy_known_at_half"] = finite_or_none(balanced_accuracy(probs, labels, 0.5))
    return out
