"""The core of the disentanglement task, free of any model: choose features for an attribute, patch them from
another entity, and read whether the attribute moved (cause) while the other stayed (isolation).

Shapes: n entities (or prompts) with activations x `[n, d]` and codes `[n, m]`; P interchange pairs. A readout
maps edited activations of some base rows to each row's answer (an index into the attribute's values); the task
passes the subject model's constrained decoding, the tests a linear map on a planted toy.

Feature choice (`feature_scores`): a feature moves the activation by its code times its write norm
(|decode(e_f) - decode(0)|), so its codes over the train entities, scaled so, are split by the attributes' classes.
`V(X | G)` is the sum of squares that X's classes explain beyond G's (between-class sum of squares of the joint
partition minus that of G). A feature for attribute A should move the activation with A among the entities a source
is drawn from (within the strata: for country, sources share the base's continent) and not with B beyond A (which
would carry B along when A is patched):

    score_A = [V(A | strata) - V(B | A)] / n

in activation variance, so that a feature whose code tracks A closely but barely moves the activation does not
crowd out one that carries A's variance. For country (strata = continent): what the countries explain within
continents, the continent adding nothing beyond the country. For continent (no strata): what the continents
explain, less what the countries explain within continents. For two independent attributes it is V(A) - V(B).
The same k for every method.

The dense baseline (`diffmean_basis`): the top-k principal directions of the between-class scatter of A's class
means (within the strata: class means minus their stratum's mean), patched as a subspace. Supervised by A's
labels, trained by nothing: a difference of means for many classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from bench.dictionary import Dictionary

Edit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (base `[P, d]`, source `[P, d]`) -> edited `[P, d]`
# (base rows `[P]`, edited x `[P, d]`, wanted answers `[P]`) -> answers `[P]` (-1 allowed where not the wanted one)
Readout = Callable[[np.ndarray, torch.Tensor, np.ndarray], np.ndarray]


# --- choosing features -------------------------------------------------------------------------------------------
def between_ss(values: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """values `[n, m]`, groups `[n]` (None: one group) -> `[m]` each column's between-group sum of squares."""
    values = np.asarray(values, dtype=np.float64)
    if groups is None:
        return np.zeros(values.shape[1])
    centred = values - values.mean(0)
    _, inv = np.unique(groups, return_inverse=True)
    sums = np.zeros((inv.max() + 1, values.shape[1]))
    np.add.at(sums, inv.reshape(-1), centred)
    return (sums ** 2 / np.bincount(inv.reshape(-1))[:, None]).sum(0)


def joint(*labels: np.ndarray | None) -> np.ndarray | None:
    """The partition into classes of equal values on every given labelling `[n]` (None ones ignored)."""
    given = [np.asarray(v) for v in labels if v is not None]
    if not given:
        return None
    return np.unique(np.stack(given, 1), axis=0, return_inverse=True)[1].reshape(-1)


def beyond(values: np.ndarray, x: np.ndarray, given: np.ndarray | None) -> np.ndarray:
    """`[m]` the sum of squares that the classes of x explain beyond those of `given`."""
    return between_ss(values, joint(x, given)) - between_ss(values, given)


def write_norms(dictionary: Dictionary) -> torch.Tensor:
    """`[d_dict]` how far a unit code moves the reconstruction: |decode(e_f) - decode(0)| (decoders are affine)."""
    m, device = dictionary.d_dict, _device(dictionary)
    zero = dictionary.decode(torch.zeros(1, m, device=device))
    out = []
    for lo in range(0, m, 1024):  # unit codes a block at a time (an identity of a wide dictionary would not fit)
        rows = torch.arange(lo, min(lo + 1024, m), device=device)
        unit = torch.zeros(len(rows), m, device=device).index_put_((torch.arange(len(rows), device=device), rows),
                                                                    torch.tensor(1.0, device=device))
        out.append((dictionary.decode(unit) - zero).norm(dim=-1))
    return torch.cat(out).cpu()


def feature_scores(codes: np.ndarray, a: np.ndarray, b: np.ndarray, strata: np.ndarray | None,
                   norms: np.ndarray | None = None) -> np.ndarray:
    """codes `[n, m]`, labels a, b `[n]`, strata `[n]` or None, the features' write norms `[m]` (default 1) ->
    score_A `[m]` (module docstring), in activation variance per entity; -inf for a feature that never varies."""
    codes = np.asarray(codes, dtype=np.float64)
    moved = codes * (1.0 if norms is None else np.asarray(norms, dtype=np.float64))
    score = (beyond(moved, a, strata) - beyond(moved, b, a)) / len(codes)
    return np.where(codes.var(0) > 0, score, -np.inf)


def choose_features(codes: np.ndarray, a: np.ndarray, b: np.ndarray, strata: np.ndarray | None, k: int,
                    norms: np.ndarray | None = None) -> np.ndarray:
    """The k best features by `feature_scores` (fewer where fewer vary), best first; ties by index."""
    score = feature_scores(codes, a, b, strata, norms)
    order = np.argsort(-score, kind="stable")
    return order[np.isfinite(score[order])][:k]


def diffmean_basis(x: np.ndarray, a: np.ndarray, strata: np.ndarray | None, k: int) -> torch.Tensor:
    """x `[n, d]`, labels a `[n]` -> `[d, k']` orthonormal columns: the top principal directions of the between-class
    scatter of A's class means (less their stratum's mean), k' = min(k, its rank)."""
    x = np.asarray(x, dtype=np.float64)
    classes = joint(a, strata)
    means = np.zeros_like(x)  # each row's class mean, less its stratum mean (the global mean without strata)
    for c in np.unique(classes):
        means[classes == c] = x[classes == c].mean(0)
    base = np.zeros_like(x) + x.mean(0)
    if strata is not None:
        for s in np.unique(strata):
            base[strata == s] = x[strata == s].mean(0)
    u, sing, _ = np.linalg.svd((means - base).T, full_matrices=False)
    rank = int((sing > sing.max(initial=0) * 1e-6).sum()) if sing.size else 0
    return torch.from_numpy(u[:, :min(k, rank)].copy()).float()


# --- edits -------------------------------------------------------------------------------------------------------
def _device(dictionary: Dictionary) -> torch.device:
    return next(iter(dictionary.state_dict().values()), torch.zeros(0)).device


class FeaturePatch:
    """Set the chosen features' codes to the source's, keeping the base's reconstruction error:
    x' = x + decode(c') - decode(c)."""

    def __init__(self, dictionary: Dictionary, features: np.ndarray) -> None:
        self.dictionary, self.features = dictionary, torch.as_tensor(np.asarray(features), dtype=torch.long)

    def __call__(self, base: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        device = _device(self.dictionary)
        x, codes = base.to(device), self.dictionary.encode(base.to(device))
        patched = codes.clone()
        patched[:, self.features] = self.dictionary.encode(source.to(device))[:, self.features]
        return (x + self.dictionary.decode(patched) - self.dictionary.decode(codes)).to(base.device)


class SubspacePatch:
    """Replace the base's component in the span of `basis` `[d, k]` (orthonormal) by the source's."""

    def __init__(self, basis: torch.Tensor) -> None:
        self.basis = basis

    def __call__(self, base: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        q = self.basis.to(base)
        return base + ((source - base) @ q) @ q.T


# --- pairs and scores --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pairs:
    """Interchange pairs for one attribute: `base`, `source` `[P]` entity indices."""

    base: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.base)


def sample_pairs(entities: np.ndarray, a: np.ndarray, b: np.ndarray, same_b: bool, n_sources: int,
                 gen: np.random.Generator) -> Pairs:
    """For each entity of `entities` as base, up to n_sources sources among `entities` whose A differs and whose B
    is the same (`same_b`) or differs too; drawn without replacement. a, b: `[n]` labels over all entities."""
    base, source = [], []
    for e in np.sort(entities):
        ok = entities[(a[entities] != a[e]) & ((b[entities] == b[e]) if same_b else (b[entities] != b[e]))]
        for s in np.sort(gen.choice(np.sort(ok), size=min(n_sources, len(ok)), replace=False)):
            base.append(int(e))
            source.append(int(s))
    return Pairs(np.array(base, dtype=int), np.array(source, dtype=int))


def cause_isolation(pairs: Pairs, edits: list[Edit], query: tuple[torch.Tensor, np.ndarray, np.ndarray, Readout],
                    check: tuple[torch.Tensor, np.ndarray, np.ndarray, Readout], a: np.ndarray,
                    b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per edit and pair `[E, P]` (bool): cause (the query for A, edited, answers the source's A) and isolation (the
    query for B, edited the same way, still answers the base's B). The E edits (one per k) go to each readout in
    one call, so that it can batch them.

    query, check: (x `[N, d]` rows of the prompts that ask for A (B), base rows `[P]`, source rows `[P]` (the same
    template), the readout of those prompts). a, b: `[n]` entity labels."""
    out = []
    for (x, base_rows, source_rows, readout), want in ((query, a[pairs.source]), (check, b[pairs.base])):
        edited = torch.cat([edit(x[base_rows], x[source_rows]) for edit in edits])
        answers = readout(np.tile(base_rows, len(edits)), edited, np.tile(want, len(edits)))
        out.append(np.asarray(answers).reshape(len(edits), len(pairs)) == want)
    return out[0], out[1]
