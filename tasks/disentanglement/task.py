"""`disentanglement`: can an attribute of an entity be changed through a few of a method's features without
changing another? (RAVEL, Huang et al. 2024, as SAEBench scores it.)

Entities are cities with two attributes, country and continent (`cities.tsv`, from Debian's tzdata and iso-codes).
Prompts query one attribute ("The city of Paris is in the country of"); a city is kept only if the model answers
both attributes right on every template (constrained greedy decoding over all the file's values, `cities.py`),
and the counts are reported. Kept cities are split (seeded) into train and test cities.

For each attribute A (B the other), each dictionary and each k in `ks`: the k features that best carry A and not B
on the train cities' codes at the city's last token (`interchange.feature_scores`; the ranking is made once, each k
patches its first k). On test cities, each base city is paired
with up to `n_sources` source cities; the chosen codes of the base prompt at the city's last token are replaced by
the source's (same template), the reconstruction error kept, and the layers after the hook run:
- cause: the prompt asking for A now answers the source's A;
- isolation: a prompt asking for B, patched the same way, still answers the base's B;
- score: their mean. Figures per k (`score_k64`, `country_cause_k256`, ...); the headline figures (`score`,
  `cause`, `isolation`, `country_score`, ...) are the means over the ks, and over the two attributes where unnamed.
  A sweep, because one k says little: too few features move nothing (score ~0.5 = cause 0, isolation 1), and which
  k suffices differs between methods.

Country and continent are nested (a city's continent follows from its country), so the pairs are chosen not to
ask the model for what contradicts the world: country sources share the base's continent (a patched country should
leave the continent where it is, and world knowledge agrees); continent sources have another continent and hence
another country (a patched continent should leave the country: the one test that country facts can be held apart
from continent facts). Country isolation thus measures collateral damage only; continent isolation measures
disentanglement proper.

Baseline, the same for every method (`diffmean_*`, the same ks): the top-k principal directions of A's class-mean
differences on the train cities (`interchange.diffmean_basis`), patched as a subspace in the same pairs.

Uncertainty: the unit is the base city (its pairs averaged); figures over several attributes or ks are grouped
means over (attribute, k), a city counting in each group it is a base of. Test-sample variance only: the feature choice is
held as made on the train cities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from bench.dictionary import Dictionary
from bench.seeds import rng
from bench.specs import param, positive
from bench.stats import Evidence
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.disentanglement.cities import ATTRIBUTES, TEMPLATES, Answers, build_prompts, load_cities
from tasks.disentanglement.interchange import (Edit, FeaturePatch, Pairs, SubspacePatch, cause_isolation,
                                               choose_features, diffmean_basis, sample_pairs, write_norms)
from tasks.disentanglement.readout import ModelReadout
from tasks.prompts import special_ids

SOURCES = ("test cities (the feature choice, made on train cities, held fixed)",)
OTHER = {"country": "continent", "continent": "country"}
SAME_OTHER = {"country": True, "continent": False}  # sources share the base's other attribute (see above)
MIN_TRAIN = 4  # fewer kept train cities than this: nothing to choose features on


@dataclass
class Scored:
    """One attribute's pairs with cause and isolation per pair `[P]` (bool) for one k."""

    pairs: Pairs
    cause: np.ndarray
    isolation: np.ndarray


@dataclass
class Disentanglement(Task):
    ks: tuple[int, ...] = positive((64, 256))  # features (and baseline directions) patched per attribute: a sweep
    n_sources: int = positive(1)  # source cities per base city and attribute
    train_fraction: float = param(0.5, gt=0, le=0.9)  # of the kept cities, for choosing features
    max_test: int = positive(64)  # test cities used as bases at most (sampled): bounds the cost per dictionary
    n_cities: int | None = param(None, gt=0)  # check only this many of the file's cities (sampled): a cheaper prepare

    name = "disentanglement"
    description = "RAVEL: patch an attribute's k features from another city; cause, isolation; vs DiffMean"
    needs_model = True
    version = 3  # 2: a sweep over ks (headline figures are means over k); 3: the DiffMean row, the board note

    # --- dictionary-independent work ---------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, ctx: TaskContext) -> None:
        model, store = ctx.model, ctx.store
        bos, pad = special_ids(model)
        cities = self.cities = load_cities()
        self.labels = {a: cities.labels(a) for a in ATTRIBUTES}
        everyone = np.arange(len(cities))
        if self.n_cities is not None and self.n_cities < len(cities):
            everyone = np.sort(rng(ctx.seed, "disentanglement/cities").choice(everyone, self.n_cities, replace=False))
        self.readouts: dict[str, ModelReadout] = {}
        right: dict[str, np.ndarray] = {}
        for attr in ATTRIBUTES:
            prompts = build_prompts(TEMPLATES[attr], list(cities.city), everyone, model.tokenize, bos, pad)
            clean = model.activations(prompts.tokens, ctx.hook)
            readout = ModelReadout(model, ctx.hook, prompts, clean, Answers(cities.values(attr), model.tokenize), pad)
            rows = np.arange(len(prompts.entity))
            answer = readout.read_clean(self.labels[attr][prompts.entity])
            # a city counts as known if every template answers right and its last token is not excluded (a
            # massive-activation position would be a patch site unlike the others)
            keep = store.exclusion.mask(prompts.tokens, clean, model.special_ids, store.reference_norm)
            site_kept = keep[torch.arange(len(rows)), prompts.position].cpu().numpy()
            ok = (answer == self.labels[attr][prompts.entity]) & site_kept
            per_city = np.zeros(len(cities), dtype=int)
            np.add.at(per_city, prompts.entity, ok)
            right[attr] = per_city == len(TEMPLATES[attr])
            self.readouts[attr] = readout
        kept = np.flatnonzero(right["country"] & right["continent"])
        order = rng(ctx.seed, "disentanglement/split").permutation(kept)
        n_train = int(round(self.train_fraction * len(kept)))
        self.train, test = np.sort(order[:n_train]), np.sort(order[n_train:])
        if len(test) > self.max_test:
            test = np.sort(rng(ctx.seed, "disentanglement/test").choice(test, self.max_test, replace=False))
        self.test = test
        # one activation per train city: the city's last token reads the same prefix in every prompt
        first = self.readouts["country"].prompts.row()
        self.x_train = self.readouts["country"].x[[first[(int(e), 0)] for e in self.train]].cpu()

        self.pairs: dict[str, Pairs] = {}
        self.rows: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        for attr in ATTRIBUTES:
            gen = rng(ctx.seed, f"disentanglement/pairs/{attr}")
            pairs = sample_pairs(test, self.labels[attr], self.labels[OTHER[attr]], SAME_OTHER[attr], self.n_sources,
                                 gen)
            self.pairs[attr] = pairs
            self.rows[attr] = {}
            for role in (attr, OTHER[attr]):  # the query's prompts, then the check's, a template drawn per pair
                table = self.readouts[role].prompts.row()
                t = gen.integers(len(TEMPLATES[role]), size=len(pairs))
                self.rows[attr][role] = tuple(
                    np.array([table[(int(e), int(j))] for e, j in zip(who, t, strict=True)], dtype=int)
                    for who in (pairs.base, pairs.source))
        self.details: dict[str, Any] = {
            "cities": int(len(everyone)), "known": {"country": int(right["country"].sum()),
                                             "continent": int(right["continent"].sum()), "both": int(len(kept))},
            "train_cities": int(len(self.train)), "test_cities": int(len(self.test)),
            "pairs": {a: int(len(p)) for a, p in self.pairs.items()},
            "values_sharing_a_first_token": {a: self.readouts[a].answers.first_tokens_shared() for a in ATTRIBUTES},
            "kept": [cities.city[e] for e in kept],
            "position": "the city's last token", "ks": list(self._ks()),
        }
        self.problem = None
        if len(self.train) < MIN_TRAIN or not any(len(p) for p in self.pairs.values()):
            self.problem = (f"only {len(kept)} of the {len(everyone)} cities checked are known to the model on both "
                            "attributes: too few to choose features and pair test cities")
            return
        self.baseline = {}
        for attr in ATTRIBUTES:
            strata = self.labels[OTHER[attr]][self.train] if SAME_OTHER[attr] else None
            basis = diffmean_basis(self.x_train.numpy(), self.labels[attr][self.train], strata, max(self._ks()))
            # the directions are ranked: each k takes the first k (all of them where the rank is below k)
            self.baseline[attr] = self._score_ks(attr, {k: basis.shape[1] for k in self._ks()},
                                                 lambda n, basis=basis: SubspacePatch(basis[:, :n]))
        self.baseline_metrics = self._metrics(self.baseline, ctx.seed, "diffmean_", "the DiffMean subspace baseline: ")
        self.details["diffmean"] = self._summaries(self.baseline)
        # the whole activation patched: what a single-position patch at this hook can do at most (cause), and what
        # moving everything costs (isolation)
        self.details["whole_activation"] = {a: self._summary(self._score_ks(a, {0: 0}, lambda n: _take_source)[0])
                                            for a in ATTRIBUTES}

    def _ks(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.ks)))

    def _score_ks(self, attr: str, available: dict[int, int], make: Callable[[int], Edit]) -> dict[int, Scored]:
        """Each k's scores for attribute `attr`: the edit `make(n)` patches the first n = min(k, available[k])
        ranked features (directions); ks that come to the same n share one edit. All edits are read in one batch."""
        other, pairs = OTHER[attr], self.pairs[attr]
        n_of = {k: min(k, available[k]) for k in available}
        ns = sorted(set(n_of.values()))
        query = (self.readouts[attr].x, *self.rows[attr][attr], self.readouts[attr])
        check = (self.readouts[other].x, *self.rows[attr][other], self.readouts[other])
        cause, isolation = cause_isolation(pairs, [make(n) for n in ns], query, check, self.labels[attr],
                                           self.labels[other])
        return {k: Scored(pairs, cause[ns.index(n)], isolation[ns.index(n)]) for k, n in n_of.items()}

    # --- per dictionary ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        if self.problem is not None:
            return TaskOutput(self._empty(self.problem), {**self.details, "problem": self.problem})
        dictionary = dictionary.to(ctx.device)
        codes = dictionary.encode(self.x_train.to(ctx.device)).double().cpu().numpy()
        norms = write_norms(dictionary).double().numpy()
        scored, chosen = {}, {}
        for i, attr in enumerate(ATTRIBUTES):
            a, b = self.labels[attr][self.train], self.labels[OTHER[attr]][self.train]
            features = choose_features(codes, a, b, b if SAME_OTHER[attr] else None, max(self._ks()), norms)
            chosen[attr] = [int(f) for f in features]
            scored[attr] = self._score_ks(attr, {k: len(features) for k in self._ks()},
                                          lambda n, features=features: FeaturePatch(dictionary, features[:n]))
            if ctx.progress:
                ctx.progress(i + 1, len(ATTRIBUTES))
        metrics = self._metrics(scored, ctx.seed)
        metrics.update(self.baseline_metrics)
        details = {**self.details, "features": chosen, "features_note": "ranked, best first: k patches the first k",
                   "per_attribute": self._summaries(scored), "unit": "base city",
                   "interval_note": "bootstrap over test base cities: test-sample variance only (the feature choice "
                                    "is held as made on train cities)",
                   # the DiffMean subspace as one ranked row (column metric -> its metric), as concept_erasure's LEACE
                   "references": {"diffmean": {"kind": "supervised reference", "metrics": {
                       name.removeprefix("diffmean_"): name for name in self.baseline_metrics
                       if name.removeprefix("diffmean_") in metrics}}},
                   "board_notes": [self._note(ctx)]}
        return TaskOutput(metrics, details)

    def _note(self, ctx: TaskContext) -> str:
        known = self.details["known"]
        return (f"disentanglement: the model names {known['country']} of {self.details['cities']} cities' country "
                f"and {known['continent']} their continent at {ctx.hook}; {known['both']} known on both are kept "
                f"({self.details['train_cities']} choose features, {self.details['test_cities']} are scored); a score "
                "near 0.5 with cause near 0 means the patch moved nothing")

    # --- metrics -----------------------------------------------------------------------------------------------
    def _per_base(self, s: Scored) -> tuple[list[str], dict[str, np.ndarray]]:
        """Each base city's mean cause, isolation and score over its pairs: (ids, columns `[n_bases]`)."""
        bases = np.unique(s.pairs.base)
        where = np.searchsorted(bases, s.pairs.base)
        count = np.bincount(where, minlength=len(bases))
        cols = {}
        for key, v in (("cause", s.cause), ("isolation", s.isolation)):
            cols[key] = np.bincount(where, weights=v.astype(float), minlength=len(bases)) / count
        cols["score"] = 0.5 * (cols["cause"] + cols["isolation"])
        return [self.cities.city[e] for e in bases], cols

    def _metrics(self, scored: dict[str, dict[int, Scored]], seed: int, prefix: str = "",
                 lead: str = "") -> dict[str, Metric]:
        """Per (attribute, k) a mean over base cities; over ks, attributes or both a grouped mean whose groups are
        the (attribute, k) blocks."""
        desc = {"cause": "share of pairs where patching the attribute's k features from the source makes the model "
                         "answer the source's value",
                "isolation": "share of pairs where the same patch leaves the other attribute's answer as the base's",
                "score": "mean of cause and isolation (RAVEL)"}
        ks = self._ks()
        per = {(a, k): self._per_base(s) for a, by_k in scored.items() for k, s in by_k.items() if len(s.pairs)}
        out: dict[str, Metric] = {}
        for key in ("cause", "isolation", "score"):
            spans = [(f"{attr}_{key}_k{k}", [attr], [k], f"{attr}, k = {k}: {desc[key]}")
                     for k in ks for attr in ATTRIBUTES]
            spans += [(f"{key}_k{k}", list(ATTRIBUTES), [k], f"k = {k}: mean over country and continent of "
                       f"<attribute>_{key}_k{k}") for k in ks]
            spans += [(f"{attr}_{key}", [attr], list(ks), f"{attr}: mean over k of {attr}_{key}_k<k>")
                      for attr in ATTRIBUTES]
            spans.append((key, list(ATTRIBUTES), list(ks), f"mean over k, country and continent of "
                                                            f"<attribute>_{key}_k<k>"))
            for name, attrs, k_in, text in spans:
                blocks = [(per[a, k][0], per[a, k][1][key]) for a in attrs for k in k_in if (a, k) in per]
                if not blocks:
                    out[prefix + name] = Metric.without_interval(None, True, lead + text,  # type: ignore[arg-type]
                                                                 "no pairs among the test cities")
                    continue
                out[prefix + name] = Metric.of(grouped_mean(blocks), True, lead + text, seed)
        return out

    def _empty(self, reason: str) -> dict[str, Metric]:
        names = [f"{p}{a}{key}{k}" for p in ("", "diffmean_") for a in ("", "country_", "continent_")
                 for key in ("cause", "isolation", "score") for k in ("", *(f"_k{k}" for k in self._ks()))]
        return {n: Metric.without_interval(None, True, n, reason) for n in names}  # type: ignore[arg-type]

    def _summaries(self, scored: dict[str, dict[int, Scored]]) -> dict[str, dict[str, dict]]:
        return {a: {str(k): self._summary(s) for k, s in by_k.items()} for a, by_k in scored.items()}

    @staticmethod
    def _summary(s: Scored) -> dict[str, float | int | None]:
        if not len(s.pairs):
            return {"pairs": 0, "cause": None, "isolation": None, "score": None}
        cause, iso = float(s.cause.mean()), float(s.isolation.mean())
        return {"pairs": int(len(s.pairs)), "cause": cause, "isolation": iso, "score": 0.5 * (cause + iso)}


def _take_source(base: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return source


def grouped_mean(blocks: list[tuple[list[str], np.ndarray]]) -> Evidence:
    """Blocks of (unit ids `[n_b]`, per-unit values `[n_b]`) -> the mean over blocks of each block's mean over its
    units, as one Evidence over the union of the units (a `grouped` mean: NaN where a unit is not in a block), so
    that it is resampled, and paired between methods, by unit. One block: a plain mean."""
    if len(blocks) == 1:
        return Evidence("base city", list(blocks[0][0]), "mean", {"x": np.asarray(blocks[0][1], dtype=float)}, {},
                        SOURCES)
    ids = sorted({u for b_ids, _ in blocks for u in b_ids})
    where = {u: i for i, u in enumerate(ids)}
    x = np.full((len(ids), len(blocks)), np.nan)
    for g, (b_ids, values) in enumerate(blocks):
        x[[where[u] for u in b_ids], g] = values
    return Evidence("base city", ids, "mean", {"x": x}, {"grouped": True, "weight": [1.0] * len(blocks)}, SOURCES)
