"""`concept_erasure`: can a concept be removed by ablating a few of a method's features, and at what cost?

For each concept (`concepts.py`: pronoun gender, grammatical number, document genre) and each k in `ks`, the k
features whose mean-pooled codes differ most between the classes on the training split (standardised difference of
class means) are set to their mean training code at every kept position, the reconstruction error kept; as a
control, k random features that fire on the concept's tokens are ablated the same way. Measured on held-out data:
- `probe`: balanced accuracy of a class-balanced logistic-regression probe retrained on the edited, mean-pooled
  training activations and tested on edited held-out ones (0.5 is chance at any class prior; lower is better
  erasure);
- `behaviour` (pronoun, number): the model's probability of the right answer (" he"/" she", " is"/" are")
  renormalised over the two, with the edit spliced in at the hook;
- damage on unrelated corpus text with the same edit spliced in: KL(p_clean || p_edited) per token, the increase of
  cross-entropy, and the edit's size relative to the activation norm. The damage contexts are spread over the
  eval split's documents and genres (seeded), away from the genre examples' documents where it can.
Supervised references, the same for every method and in every result: LEACE (the provable linear eraser) and
DiffMean erasure (project out the difference of the class means, AxBench's DiffMean direction; `mean_difference`
in `details`), both fitted on the labelled, pooled training activations and measured as the ablations are. Their
figures are metrics too (`leace_erasure`, `diffmean_behaviour_erasure`, `<concept>_diffmean_damage_kl`, ...: the
share removed by the one edit, no k), over the same units, so the leaderboard shows each as a row ranked with the
methods (`details["references"]`).

Summary per concept: `erasure` = mean over k of the share of the probe's above-chance accuracy removed, the same
for the random control and for behaviour, and the mean damage KL; averaged over concepts as `erasure`,
`damage_kl`.

Uncertainty (`bench.stats`): the units are the test prompts (genre: documents) for probe and behaviour figures,
and the damage contexts grouped by document for damage figures. The summaries are grouped ratios that reproduce
them exactly: for the share of above-chance balanced accuracy removed, num = w (correct_clean - correct_edited),
den = w (correct_clean - 1/2) per test example with w = 1 / (2 n_class), groups = k (and concept); for behaviour
the same with P(right); for damage KL, num = KL summed over a document's tokens, den = its tokens. Probes are held
as fitted on the (edited) train split: the intervals cover test-sample variance, not refitting.
"""


from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.dictionary import Dictionary
from bench.seeds import rng, stream
from bench.specs import param, positive
from bench.stats import Evidence, interval
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.concept_erasure.concepts import GENRES, PromptConcept, genre_contexts, number_concept, pronoun_concept
from tasks.concept_erasure.edits import Edit, FeatureAblation, MeanDifference, check_affine, leace
from tasks.divergence import CleanDistribution
from tasks.probing import PROBE_SOURCES, ProbeResult, Scored, accuracy_evidence, fit_probe, mean_by, top_features
from tasks.prompts import special_ids
from tasks.sampling import coverage, split_genres, spread_contexts

CHANCE = 0.5  # balanced accuracy at any class prior; P(right answer) renormalised over the two answers
MIN_ABOVE_CHANCE = 0.05  # a clean probe / model this close to chance has nothing to erase
BEHAVIOUR_SOURCES = ("test prompts",)
DAMAGE_SOURCES = ("damage documents",)
PROBE_ERASURE = "mean over k of the share of the retrained probe's above-chance balanced accuracy removed (1 = chance)"
BEHAVIOUR_ERASURE = "mean over k of the share of the model's above-chance answer probability removed"
# The supervised reference edits (`prepare`'s baselines, fitted on the labelled train split), as metrics and
# leaderboard rows: baseline key -> (metric prefix and row name, what it is).
REFERENCES = {"leace": ("leace", "LEACE"),
              "mean_difference": ("diffmean", "DiffMean (project out the train class-mean difference)")}


@dataclass
class Examples:
    """One split of a concept: token activations grouped into examples, pooled, and (for prompts) the tokens."""

    x: torch.Tensor  # `[n_tokens, d]` kept token activations, examples concatenated
    example: torch.Tensor  # `[n_tokens]` index of each token's example
    label: torch.Tensor  # `[n_examples]` bool
    ids: list[str]  # `[n_examples]` each example's unit (a prompt; a document for genre contexts)
    tokens: torch.Tensor | None = None  # `[n_examples, T]` prompts (behaviour), else None
    keep: torch.Tensor | None = None  # `[n_examples, T]` bool, positions the edit touches
    last: torch.Tensor | None = None  # `[n_examples]` prediction position
    clean: torch.Tensor | None = None  # `[n_examples, T, d]` every position's activation (prompts): edits start there

    def pool(self, values: torch.Tensor) -> torch.Tensor:
        """`[n_tokens, w]` -> mean over each example's tokens `[n_examples, w]`."""
        return mean_by(values, self.example, len(self.label)).float()


@dataclass
class Concept:
    name: str
    train: Examples
    test: Examples
    answers: tuple[int, int] | None  # behaviour tokens for label False / True
    unit: str = "prompt"  # what the test ids name


@dataclass
class Measured:
    """One edit's readings per unit: the retrained probe on the test examples, P(right answer) per test prompt
    (`right` `[n_test]`, behaviour concepts) and, per damage document, sums over its tokens (`damage`: kl, tokens,
    ce_increase, ce_tokens, edit, norm, each `[n_damage_documents]`)."""

    probe: ProbeResult
    right: np.ndarray | None = None
    damage: dict[str, np.ndarray] | None = None

    def summary(self) -> dict[str, float | None]:
        """The figures in `details` (floats; the reports' figures read them)."""
        out: dict[str, float | None] = {"probe": self.probe.accuracy}
        if self.right is not None:
            out["behaviour"] = float(self.right.mean())
        if self.damage is not None:
            d = {k: float(v.sum()) for k, v in self.damage.items()}
            out.update(kl=max(d["kl"] / d["tokens"], 0.0), ce_increase=d["ce_increase"] / d["ce_tokens"],
                       edit=d["edit"] / d["norm"])
        return out


def class_weights(label: np.ndarray) -> np.ndarray:
    """w `[n]` with w_i = 1 / (2 n_class(i)), so sum_i w_i correct_i is balanced accuracy and sum_i w_i = 1."""
    label = np.asarray(label, dtype=bool)
    return np.where(label, 0.5 / max(label.sum(), 1), 0.5 / max((~label).sum(), 1))


def grouped_ratio(blocks: list[tuple[list[str], np.ndarray, np.ndarray]], unit: str,
                  sources: tuple[str, ...]) -> Evidence:
    """Blocks of (ids `[n_b]`, num `[n_b, G_b]`, den `[n_b, G_b]`) -> one grouped `ratio` over all their groups,
    equally weighted: the mean over groups of sum(num) / sum(den). Rows with the same id are one unit (summed);
    blocks share units only through equal ids (the damage documents of every concept)."""
    ids = list(dict.fromkeys(u for b in blocks for u in b[0]))
    where = {u: i for i, u in enumerate(ids)}
    n_groups = sum(b[1].shape[1] for b in blocks)
    num, den = np.zeros((len(ids), n_groups)), np.zeros((len(ids), n_groups))
    g = 0
    for b_ids, b_num, b_den in blocks:
        rows = np.array([where[u] for u in b_ids], dtype=int)
        width = b_num.shape[1]
        np.add.at(num[:, g:g + width], rows, b_num)
        np.add.at(den[:, g:g + width], rows, b_den)
        g += width
    return Evidence(unit, ids, "ratio", {"num": num, "den": den}, {"grouped": True, "weight": [1.0] * n_groups},
                    sources)


def interval_json(ev: Evidence, seed: int) -> dict[str, Any]:
    """A figure in `details` with its interval: {"interval": [lo, hi] | None, "interval_info": ...}."""
    info = interval(ev, seed)
    return {"interval": list(info.interval) if info.interval else None, "interval_info": info.to_json()}


@dataclass
class ConceptErasure(Task):
    ks: tuple[int, ...] = positive((2, 8, 32))
    n_train: int = param(64, ge=4, even=True)  # prompts per prompt concept (half each label), genre: contexts per class
    n_test: int = param(24, ge=2, even=True)
    n_genre_train: int = positive(24)  # contexts per genre
    n_genre_test: int = positive(12)
    n_damage_contexts: int = positive(8)  # unrelated eval contexts (one per document) for KL / CE damage; >= 5 for intervals
    c: float = positive(1.0)  # inverse L2 strength of the probes

    name = "concept_erasure"
    description = "ablate the k features most tied to a concept: retrained-probe accuracy, behaviour, damage; vs LEACE"
    needs_model = True
    topk_rows = False
    version = 2  # 2: LEACE and DiffMean as reference metrics

    # --- dictionary-independent work ---------------------------------------------------------------------------
    def prepare(self, ctx: TaskContext) -> None:
        model, store = ctx.model, ctx.store
        bos, pad = special_ids(model)
        seed = stream(ctx.seed, "concept_erasure")
        self.concepts: list[Concept] = []
        for make in (pronoun_concept, number_concept):
            pc: PromptConcept = make(self.n_train, self.n_test, model.tokenize, seed, bos, pad)
            self.concepts.append(Concept(pc.name, self._prompt_examples(ctx, pc.train, pc.name),
                                         self._prompt_examples(ctx, pc.test, pc.name), pc.answers))
        self.coverage: dict[str, Any] = {c.name: {"train_prompts": self.n_train, "test_prompts": self.n_test}
                                         for c in self.concepts}
        genre_train = self._genre_examples(store.train, self.n_genre_train, ctx.seed, "train")
        genre_test = self._genre_examples(store.eval, self.n_genre_test, ctx.seed, "test")
        if genre_train is not None and genre_test is not None:
            self.concepts.append(Concept("genre", genre_train[0], genre_test[0], None, "document"))
            self.coverage["genre"] = {"train": genre_train[1], "test": genre_test[1]}

        # Damage text: eval contexts spread over documents and genres, away from the genre test documents where
        # enough documents are left (else only away from the genre test contexts).
        doc, genres = store.eval.doc(), split_genres(store.eval)
        used = genre_contexts(store.eval, self.n_genre_test, GENRES, ctx.seed, "concept_erasure/genre/test")[0]
        pool = np.flatnonzero(~np.isin(doc, doc[used]))
        if len(set(doc[pool].tolist())) < self.n_damage_contexts:
            pool = np.setdiff1d(np.arange(len(doc)), used)
        picked = pool[spread_contexts(doc[pool], genres, self.n_damage_contexts, ctx.seed, "concept_erasure/damage")]
        self.coverage["damage"] = coverage(doc, genres, picked)
        self._damage_ids = [f"doc/{store.eval.documents[d][0]}" for d in doc[picked]]
        self._damage_docs = list(dict.fromkeys(self._damage_ids))
        self._damage_owner = np.array([self._damage_docs.index(u) for u in self._damage_ids], dtype=int)
        self._damage_tokens = torch.from_numpy(store.eval.tokens()[picked]).long()
        self._damage_keep = torch.from_numpy(store.eval.keep()[picked])
        logits, self._damage_clean = model.logits_and_activations(self._damage_tokens, ctx.hook)
        damage_logp = F.log_softmax(logits.float(), -1)
        self._damage_x = self._damage_clean[self._damage_keep]
        # each kept token's context `[n_kept]`: edit sizes are summed per context, then per document
        self._damage_kept_ctx = torch.arange(len(picked))[:, None].expand_as(self._damage_keep)[self._damage_keep]
        self._damage_ce = self._ce(damage_logp)  # `[n_contexts]` summed next-token CE of the clean run
        self._damage_dist = CleanDistribution(damage_logp)  # `[n_contexts, T, V]`

        self.clean = {c.name: self._measure(ctx, c, None) for c in self.concepts}
        self.baselines: dict[str, dict[str, Measured]] = {}
        for c in self.concepts:
            pooled = c.train.pool(c.train.x)
            self.baselines[c.name] = {
                "leace": self._measure(ctx, c, leace(pooled, c.train.label)),
                "mean_difference": self._measure(ctx, c, MeanDifference(pooled, c.train.label)),
            }
        # Dictionary-independent, so their figures and intervals are computed once.
        self._reference = {c.name: {"clean": self._with_intervals(c, self.clean[c.name], ctx.seed),
                                    **{b: self._with_intervals(c, m, ctx.seed, self.clean[c.name])
                                       for b, m in self.baselines[c.name].items()}} for c in self.concepts}
        self._reference_metrics: dict[str, Metric] = {}
        for baseline, (name, what) in REFERENCES.items():
            self._reference_metrics |= self._metrics({c.name: {"top": [self.baselines[c.name][baseline]]}
                                                      for c in self.concepts}, ctx.seed, name, what)

    def _prompt_examples(self, ctx: TaskContext, ps, concept: str) -> Examples:
        model, store = ctx.model, ctx.store
        acts = model.activations(ps.tokens, ctx.hook)
        keep = ps.real() & store.exclusion.mask(ps.tokens, acts, model.special_ids, store.reference_norm)
        example = torch.arange(len(ps.label))[:, None].expand_as(keep)[keep]
        ids = [f"{concept}/{i}" for i in range(len(ps.label))]  # seeded prompts: the same for every dictionary
        return Examples(acts[keep], example, ps.label, ids, ps.tokens, keep, ps.length - 1, acts)

    @staticmethod
    def _genre_examples(split, n: int, seed: int, which: str) -> tuple[Examples, dict] | None:
        idx, labels = genre_contexts(split, n, GENRES, seed, f"concept_erasure/genre/{which}")
        if labels.sum() < 2 or (~labels).sum() < 2:
            return None  # a corpus without both genres (e.g. --text): the concept is left out
        keep = torch.from_numpy(split.keep()[idx])
        acts = torch.cat([split.context_activations(int(i), int(i) + 1) for i in idx])
        example = torch.arange(len(idx))[:, None].expand_as(keep)[keep]
        doc = split.doc()
        ids = [f"genre/{split.documents[doc[i]][0]}" for i in idx]  # contexts of one document are one unit
        return Examples(acts[keep], example, labels, ids), coverage(doc, split_genres(split), idx)

    # --- measurements ------------------------------------------------------------------------------------------
    def _splice(self, ctx: TaskContext, tokens: torch.Tensor, keep: torch.Tensor, edit: Edit | None,
                clean: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities `[B, T, V]` with `edit` applied to the kept positions at the hook (`clean`: the clean
        activation there `[B, T, d]`, so that the edited pass starts at the hook)."""
        if edit is None:
            return F.log_softmax(ctx.model.logits(tokens).float(), -1)

        def hook(act: torch.Tensor) -> torch.Tensor:
            out = act.clone()
            out[keep.to(act.device)] = edit(act[keep.to(act.device)]).to(act.dtype)
            return out

        return F.log_softmax(ctx.model.logits(tokens, ctx.hook, hook, clean=clean).float(), -1)

    def _ce(self, logp: torch.Tensor) -> np.ndarray:
        """Next-token cross-entropy summed over each damage context's positions, `[n_contexts]`."""
        return (-logp[:, :-1].gather(-1, self._damage_tokens[:, 1:, None])).sum((1, 2)).double().numpy()

    def _per_doc(self, per_context: np.ndarray) -> np.ndarray:
        """`[n_contexts]` -> summed per damage document `[n_documents]`."""
        out = np.zeros(len(self._damage_docs))
        np.add.at(out, self._damage_owner, per_context)
        return out

    def _measure(self, ctx: TaskContext, c: Concept, edit: Edit | None,
                 pooled: tuple[torch.Tensor, torch.Tensor] | None = None, damage: bool = True) -> Measured:
        """Probe, behaviour and (if `damage` and there is an edit) damage for one edit (None: no edit). `pooled`:
        the edited mean-pooled train and test activations, where the caller has a cheaper way to them than editing
        every token."""
        if pooled is None:
            pooled = tuple(s.pool(s.x if edit is None else edit(s.x)) for s in (c.train, c.test))  # type: ignore[assignment]
        train, test = pooled
        out = Measured(fit_probe(train.numpy(), c.train.label.numpy(), test.numpy(), c.test.label.numpy(), self.c))
        if c.answers is not None:
            t = c.test
            logp = self._splice(ctx, t.tokens, t.keep, edit, t.clean)[torch.arange(len(t.label)), t.last]
            pair = logp[:, list(c.answers)].softmax(-1)  # renormalised over the two answers
            out.right = pair[torch.arange(len(t.label)), t.label.long()].double().numpy()
        if edit is None or not damage:
            return out
        logp = self._splice(ctx, self._damage_tokens, self._damage_keep, edit, self._damage_clean)
        kl = self._damage_dist.kl(logp)  # `[B, T]` per token
        size = (edit(self._damage_x) - self._damage_x).norm(dim=-1).double()  # `[n_kept]`
        n_ctx, width = self._damage_tokens.shape
        owner = self._damage_kept_ctx
        by_ctx = lambda v: torch.zeros(n_ctx, dtype=torch.float64).index_add_(0, owner, v).numpy()  # noqa: E731
        out.damage = {
            "kl": self._per_doc(kl.sum(1).numpy()), "tokens": self._per_doc(np.full(n_ctx, width, float)),
            "ce_increase": self._per_doc(self._ce(logp) - self._damage_ce),
            "ce_tokens": self._per_doc(np.full(n_ctx, width - 1, float)),
            "edit": self._per_doc(by_ctx(size)), "norm": self._per_doc(by_ctx(self._damage_x.norm(dim=-1).double())),
        }
        return out

    # --- evidence ----------------------------------------------------------------------------------------------
    def _probe_block(self, c: Concept, edited: list[Measured]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Share of the clean probe's above-chance balanced accuracy removed, per test example and k: num, den
        `[n_test, K]` (their ratio of sums is (bacc_clean - bacc_k) / (bacc_clean - 1/2))."""
        w = class_weights(c.test.label.numpy())
        clean = self.clean[c.name].probe.correct.astype(float)
        num = np.stack([w * (clean - m.probe.correct) for m in edited], 1)
        den = np.repeat((w * (clean - CHANCE))[:, None], len(edited), 1)
        return c.test.ids, num, den

    def _behaviour_block(self, c: Concept, edited: list[Measured]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The same for P(right answer): num = p_clean - p_k, den = p_clean - 1/2 per prompt, `[n_test, K]`."""
        clean = self.clean[c.name].right
        num = np.stack([clean - m.right for m in edited], 1)
        den = np.repeat((clean - CHANCE)[:, None], len(edited), 1)
        return c.test.ids, num, den

    def _damage_block(self, edited: list[Measured], key: str = "kl",
                      per: str = "tokens") -> tuple[list[str], np.ndarray, np.ndarray]:
        """Damage per document and k: num = `key` summed over the document's tokens, den = its `per` count."""
        return (self._damage_docs, np.stack([m.damage[key] for m in edited], 1),
                np.stack([m.damage[per] for m in edited], 1))

    def _with_intervals(self, c: Concept, m: Measured, seed: int, clean: Measured | None = None) -> dict[str, Any]:
        """A reference edit's (or the clean run's) figures with intervals over the same units as the metrics."""
        out: dict[str, Any] = dict(m.summary())
        if clean is None:  # the clean run: no edit, no damage
            out.update(kl=0.0, ce_increase=0.0, edit=0.0)
        iv = {"probe": interval_json(accuracy_evidence([Scored.of(c.test.ids, m.probe)], c.unit), seed)}
        if m.right is not None:
            iv["behaviour"] = interval_json(Evidence("prompt", c.test.ids, "mean", {"x": m.right}, {},
                                                     BEHAVIOUR_SOURCES), seed)
        if m.damage is not None:
            for key, per in (("kl", "tokens"), ("ce_increase", "ce_tokens"), ("edit", "norm")):
                iv[key] = interval_json(grouped_ratio([self._damage_block([m], key, per)], "document",
                                                      DAMAGE_SOURCES), seed)
        if clean is not None and m.damage is not None:  # the share this reference edit removes
            if clean.probe.accuracy - CHANCE > MIN_ABOVE_CHANCE:
                iv["erasure"] = interval_json(grouped_ratio([self._probe_block(c, [m])], c.unit, PROBE_SOURCES), seed)
                out["erasure"] = (clean.probe.accuracy - m.probe.accuracy) / (clean.probe.accuracy - CHANCE)
            if m.right is not None and clean.right.mean() - CHANCE > MIN_ABOVE_CHANCE:
                iv["behaviour_erasure"] = interval_json(grouped_ratio([self._behaviour_block(c, [m])], "prompt",
                                                                      BEHAVIOUR_SOURCES), seed)
                out["behaviour_erasure"] = (clean.right.mean() - m.right.mean()) / (clean.right.mean() - CHANCE)
        out["intervals"] = iv
        return out

    # --- per dictionary ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        dictionary = dictionary.to(ctx.device)
        generator = rng(ctx.seed, "concept_erasure/random_features")
        per_concept: dict[str, Any] = {}
        measured: dict[str, dict[str, list[Measured]]] = {}  # concept -> "top"/"random" -> one per k
        for c in self.concepts:
            codes = {s: dictionary.encode(split.x) for s, split in (("train", c.train), ("test", c.test))}
            check_affine(dictionary, codes["train"])
            pooled_codes = {"train": c.train.pool(codes["train"]), "test": c.test.pool(codes["test"])}
            pooled_x = {"train": c.train.pool(c.train.x), "test": c.test.pool(c.test.x)}
            values = codes["train"].mean(0)  # each feature's mean code on the concept's training tokens
            ranked = torch.from_numpy(top_features(pooled_codes["train"].double().numpy(), c.train.label.numpy(),
                                                   max(self.ks)).copy())
            firing = torch.nonzero(codes["train"].abs().sum(0) > 0).flatten()
            rows = []
            measured[c.name] = {"top": [], "random": []}
            for k in self.ks:
                row: dict[str, Any] = {"k": k}
                chosen = {"top": ranked[:k],
                          "random": firing[torch.from_numpy(generator.permutation(len(firing))[:k])]}
                for which, features in chosen.items():
                    ablate = FeatureAblation(dictionary, features, values[features])
                    pooled = (ablate.pooled(pooled_x["train"], pooled_codes["train"]),
                              ablate.pooled(pooled_x["test"], pooled_codes["test"]))
                    # the random control answers "is this erasure more than chance?"; its damage is not needed
                    m = self._measure(ctx, c, ablate, pooled, damage=which == "top")
                    measured[c.name][which].append(m)
                    row[which] = m.summary()
                row["features"] = [int(i) for i in chosen["top"]]
                rows.append(row)
                if ctx.progress:
                    ctx.progress(len(rows) + len(self.ks) * len(per_concept), len(self.ks) * len(self.concepts))
            per_concept[c.name] = {"curve": rows, **self._reference[c.name]}
        metrics = {**self._metrics(measured, ctx.seed), **self._reference_metrics}
        return TaskOutput(metrics, {"concepts": per_concept, "coverage": self.coverage,
                                    "units": {"probe": {c.name: c.unit for c in self.concepts},
                                              "behaviour": "prompt", "damage": "document"},
                                    "interval_note": "bootstrap over test units (probes held as fitted on the "
                                                     "edited train split) and damage documents: test-sample "
                                                     "variance only",
                                    "references": self._references(metrics),
                                    "board_notes": [self._note()]})

    def _metrics(self, measured: dict[str, dict[str, list[Measured]]], seed: int, reference: str = "",
                 what: str = "") -> dict[str, Metric]:
        """Per concept and over concepts: probe and behaviour erasure (and their random controls) as grouped
        ratios over test units (groups: k, and concept), damage KL as a grouped ratio over damage documents.
        With `reference` (a name, e.g. `diffmean`), the one edit in `measured[concept]["top"]` is that reference's
        (`what` says what it is): the same figures, named `<reference>_<key>` and `<concept>_<reference>_<key>`,
        without random controls."""
        by_name = {c.name: c for c in self.concepts}
        keys = ("erasure", "behaviour_erasure", "damage_kl") if reference else (
            "erasure", "erasure_random", "behaviour_erasure", "behaviour_erasure_random", "damage_kl")
        blocks: dict[str, list] = {key: [] for key in keys}
        units: dict[str, set[str]] = {key: set() for key in blocks}
        metrics: dict[str, Metric] = {}
        prefix = f"{reference}_" if reference else ""
        over_k = (lambda d: f"{what}: {d.removeprefix('mean over k of ')}") if reference else (lambda d: d)  # noqa: E731
        random_note = "the same with k random firing features ablated (the control)"
        for name, m in measured.items():
            c, clean = by_name[name], self.clean[name]
            specs = [("damage_kl", self._damage_block(m["top"]), "document", DAMAGE_SOURCES, False,
                      over_k("mean over k of KL(clean || edited) per token on unrelated text"), None)]
            at_chance = clean.probe.accuracy - CHANCE <= MIN_ABOVE_CHANCE
            specs += [(key, self._probe_block(c, m[which]), c.unit, PROBE_SOURCES, True, desc,
                       "the clean probe is at chance: nothing to erase" if at_chance else None)
                      for key, which, desc in (
                          ("erasure", "top", over_k(PROBE_ERASURE)),
                          ("erasure_random", "random", random_note)) if key in blocks]
            if c.answers is not None:
                at_chance = clean.right.mean() - CHANCE <= MIN_ABOVE_CHANCE
                specs += [(key, self._behaviour_block(c, m[which]), "prompt", BEHAVIOUR_SOURCES, True, desc,
                           "the clean model is at chance: nothing to erase" if at_chance else None)
                          for key, which, desc in (
                              ("behaviour_erasure", "top", over_k(BEHAVIOUR_ERASURE)),
                              ("behaviour_erasure_random", "random", random_note)) if key in blocks]
            for key, block, unit, sources, higher, desc, skip in specs:
                if skip:
                    metrics[f"{name}_{prefix}{key}"] = Metric.without_interval(
                        None, higher, desc, skip, unit=unit, n=len(set(block[0])))  # type: ignore[arg-type]
                    continue
                metrics[f"{name}_{prefix}{key}"] = Metric.of(grouped_ratio([block], unit, sources), higher, desc, seed)
                blocks[key].append(block)
                units[key].add(unit)
        for key in keys:
            higher = key != "damage_kl"
            desc = f"mean over concepts of <concept>_{prefix}{key}"
            if not blocks[key]:
                metrics[f"{prefix}{key}"] = Metric.without_interval(None, higher, desc,  # type: ignore[arg-type]
                                                                    "no concept has anything to erase")
                continue
            unit = next(iter(units[key])) if len(units[key]) == 1 else "example"
            sources = DAMAGE_SOURCES if key == "damage_kl" else ("test sample",)
            metrics[f"{prefix}{key}"] = Metric.of(grouped_ratio(blocks[key], unit, sources), higher, desc, seed)
        return metrics

    def _references(self, metrics: dict[str, Metric]) -> dict[str, dict]:
        """LEACE and DiffMean as the leaderboard shows them: one row each, its figures in the method columns they
        are a bar for (column metric -> reference metric)."""
        out = {}
        for name, _ in REFERENCES.values():
            pairs = {key: f"{name}_{key}" for key in ("erasure", "behaviour_erasure", "damage_kl")}
            pairs |= {f"{c.name}_{key}": f"{c.name}_{name}_{key}" for c in self.concepts
                      for key in ("erasure", "behaviour_erasure", "damage_kl")}
            out[name] = {"kind": "supervised reference",
                         "metrics": {col: ref for col, ref in pairs.items() if col in metrics and ref in metrics}}
        return out

    def _note(self) -> str:
        parts = []
        for c in self.concepts:
            ref = self._reference[c.name]
            clean, lea = ref["clean"], ref["leace"]

            def fig(d: dict, key: str, digits: int = 2) -> str:
                iv = d["intervals"].get(key, {}).get("interval")
                return f"{d[key]:.{digits}f}" + (f" [{iv[0]:.{digits}f}, {iv[1]:.{digits}f}]" if iv else "")

            beh = lambda d: f", behaviour {fig(d, 'behaviour')}" if "behaviour" in d else ""  # noqa: E731
            dm = ref["mean_difference"]
            parts.append(f"{c.name}: clean probe {fig(clean, 'probe')}{beh(clean)}; LEACE probe {fig(lea, 'probe')}"
                         f"{beh(lea)}, KL {fig(lea, 'kl', 3)}; DiffMean probe {fig(dm, 'probe')}{beh(dm)}, "
                         f"KL {fig(dm, 'kl', 3)}")
        return ("concept_erasure (k = " + ", ".join(map(str, self.ks)) + "; balanced accuracy, 95% intervals over "
                "test units): " + "; ".join(parts))
