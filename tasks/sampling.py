"""Samples spread over a split's documents and genres, and what a sample covered.

Never "the first n": consecutive contexts of a split can come from one document. `spread_contexts` shuffles the
documents of each genre (seeded), interleaves the genres, and takes one context per document per round, so n
contexts cover min(n, #documents) documents and every genre in proportion to its documents.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from bench.seeds import rng


def spread_contexts(doc: np.ndarray, genres: list[str], n: int, seed: int, tag: str) -> np.ndarray:
    """Indices of up to n contexts spread over documents and genres; `doc` `[n_contexts]` gives each context's
    document, `genres[d]` each document's genre. Ascending indices (contexts read in store order)."""
    gen = rng(seed, f"spread/{tag}")
    by_doc: dict[int, list[int]] = defaultdict(list)
    for i, d in enumerate(np.asarray(doc).tolist()):
        by_doc[d].append(i)
    for contexts in by_doc.values():
        gen.shuffle(contexts)
    by_genre: dict[str, list[int]] = defaultdict(list)
    for d in sorted(by_doc):
        by_genre[genres[d] if d < len(genres) else "unlabelled"].append(d)
    for docs in by_genre.values():
        gen.shuffle(docs)
    # Interleave genres by position within each genre (a document at 30% of its genre's list comes at 30% of
    # the order), so any prefix of the order spans the genres in proportion.
    keyed = [((i + gen.random()) / len(docs), d) for docs in by_genre.values() for i, d in enumerate(docs)]
    order = [d for _, d in sorted(keyed)]
    picked: list[int] = []
    depth = max((len(c) for c in by_doc.values()), default=0)
    for w in range(depth):
        for d in order:
            if len(picked) == n:
                return np.sort(np.asarray(picked, dtype=int))
            if w < len(by_doc[d]):
                picked.append(by_doc[d][w])
    return np.sort(np.asarray(picked, dtype=int))


def split_genres(split) -> list[str]:
    """The genre of each document of a store split (`ActivationSplit.documents` holds (id, genre))."""
    return [g for _, g in split.documents]


def coverage(doc: np.ndarray, genres: list[str], idx: np.ndarray) -> dict[str, Any]:
    """How many contexts, documents and genres the contexts `idx` cover, per genre too."""
    docs = np.asarray(doc)[np.asarray(idx, dtype=int)]
    per_genre: dict[str, dict[str, int]] = {}
    for g in sorted({genres[d] for d in docs.tolist()}):
        mine = [d for d in docs.tolist() if genres[d] == g]
        per_genre[g] = {"contexts": len(mine), "documents": len(set(mine))}
    return {"n_contexts": int(len(docs)), "n_documents": int(len(set(docs.tolist()))), "n_genres": len(per_genre),
            "per_genre": per_genre}
