"""`sparse_probing`: can a few of a method's features tell real concepts apart, and is that better than a dense probe?

Concepts, each a set of binary problems with real labels (Kantamneni et al. 2025; SAEBench's sparse probing):
- `genre`: the document a corpus context comes from (fiction, scripture, quotations, definitions, technical,
  jargon in the shipped corpus), one problem per genre (this genre vs the rest). An example is a whole context:
  its codes are mean-pooled over its kept tokens. Contexts are spread over the split's documents and genres
  (seeded); the test split takes one context per document, so test examples are independent units.
- `pronoun`: "<name> went to the store, and" with a male or a female name (`concept_erasure/concepts.py`); one
  token per example, the last one, where the model must already know which pronoun comes. Train and test use
  disjoint names, so the probe must read gender, not the name.
- `number`: "The <noun> in the garden", singular or plural noun, last token (disjoint nouns between splits).
- `repeated_name`: IOI prompts whose second-clause subject either repeats a name said before (the IOI subject,
  S2) or is a new one, at the same position in the same template (`ioi/dataset.py`); one token, that name.
  The repetition is what the IOI circuit's duplicate-token heads detect.

For each problem the k features with the largest standardised difference of class means on the train split are
chosen (k in `ks`), a logistic-regression probe on them is fitted on train and scored on test by AUROC and balanced
accuracy. At k = 1 this AUROC is the single best feature's own (AxBench's concept detection score): a class-balanced
logistic regression on one feature has the sign of the feature's train class-mean difference (its loss is convex
and its slope at w = 0 points that way), so its scores rank the test examples as the signed code does.

Two supervised references, the same for every method (they read the raw activations and the labels, never the
dictionary): a dense logistic-regression probe on all d_model dimensions, the bar to beat; and DiffMean (Wu et al.
2025), the direction mean(x | pos) - mean(x | neg) on the train split, whose score is x . w (AxBench: it detects
concepts better than SAE features). Metrics per concept (`<concept>_auroc_k<k>`, `<concept>_dense_auroc`,
`<concept>_diffmean_auroc`) and means over concepts (`auroc_k<k>`, `accuracy_k<k>`, `dense_auroc`,
`dense_accuracy`, `diffmean_auroc`, `diffmean_accuracy`: the threshold half-way between the projected class means).
`details["references"]` tells the leaderboard to show each reference as one row beside the methods (DiffMean in
the k = 1 columns, the dense probe in every k column), ranked with them.

Uncertainty: the unit is a test example (a prompt; for genre a document). Each probe's test scores are kept, so
every metric is `bench.stats` evidence over those units (AUROC: `auroc`; balanced accuracy: a grouped ratio over
(problem, class)) with a bootstrap interval. The probes stay as fitted on train: the interval covers test-sample
variance, not refitting the probe or re-choosing the features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.dictionary import Dictionary
from bench.errors import BenchError
from bench.seeds import stream
from bench.specs import param, positive
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.concept_erasure.concepts import number_concept, pronoun_concept
from tasks.ioi.dataset import repeated_names
from tasks.probing import (ProbeResult, Scored, accuracy_evidence, auroc_evidence, diffmean, fit_probe, mean_by,
                           top_features)
from tasks.prompts import special_ids
from tasks.sampling import coverage, split_genres, spread_contexts

TOKEN_CONCEPTS = ("pronoun", "number", "repeated_name")
# The supervised references, the same for every method (they read the raw activations and the labels): key -> what.
REFERENCES = {"dense": "a dense logistic probe on the raw activations (the bar to beat)",
              "diffmean": "the DiffMean direction (train class-mean difference of the raw activations)"}
BEST_FEATURE = "the single best feature (a one-feature probe ranks examples as the feature's own code does)"


@dataclass
class ProbeSet:
    """One concept's examples on both splits. An example is a `[t, d]` block of token activations (t = 1 for a
    token-level label, a context's kept tokens for genre) whose codes are mean-pooled; `problems` maps each binary
    problem's name to its (train, test) labels; `test_ids` names each test example's unit (the same for every
    dictionary: it depends on the data only, which is what pairs two methods in the reports)."""

    train: list[torch.Tensor]
    test: list[torch.Tensor]
    problems: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    test_ids: list[str] = field(default_factory=list)
    unit: str = "prompt"
    coverage: dict[str, Any] = field(default_factory=dict)


def _pool(examples: list[torch.Tensor], fn) -> np.ndarray:
    """Mean over each example's tokens of fn(tokens) -> `[n_examples, width]` float64; one call of fn for all."""
    owner = torch.repeat_interleave(torch.arange(len(examples)), torch.tensor([len(x) for x in examples]))
    return mean_by(fn(torch.cat(examples)), owner, len(examples)).numpy()


def _contexts(split, n: int, seed: int, tag: str) -> tuple[list[torch.Tensor], np.ndarray, list[str], dict]:
    """Kept activations of up to `n` contexts spread over a split's documents and genres (seeded), each context's
    genre, its document's id, and what the sample covered."""
    doc, genres = split.doc(), split_genres(split)
    idx = spread_contexts(doc, genres, n, seed, tag)
    keep = split.keep()
    acts = [split.context_activations(int(i), int(i) + 1)[0][torch.from_numpy(keep[i])] for i in idx]
    docs = [split.documents[doc[i]][0] for i in idx]
    return acts, np.array([genres[doc[i]] for i in idx]), docs, coverage(doc, genres, idx)


def genre_set(store, n_train: int, n_test: int, min_examples: int, seed: int = 0) -> ProbeSet | None:
    """One-vs-rest genre problems for the genres with `min_examples` contexts on each side of both splits.

    Test contexts are one per document (at most as many as the split has documents): contexts of one document
    are not independent, so the document is the unit the intervals resample."""
    n_test = min(n_test, len(set(store.eval.doc().tolist())))
    train, g_train, _, cov_train = _contexts(store.train, n_train, seed, "sparse_probing/genre/train")
    test, g_test, test_docs, cov_test = _contexts(store.eval, n_test, seed, "sparse_probing/genre/test")
    problems = {str(g): (g_train == g, g_test == g) for g in sorted(set(g_train))}
    problems = {g: ys for g, ys in problems.items()
                if min(ys[0].sum(), (~ys[0]).sum(), ys[1].sum(), (~ys[1]).sum()) >= min_examples}
    if not problems:
        return None
    return ProbeSet(train, test, problems, [f"genre/{d}" for d in test_docs], "document",
                    {"train": cov_train, "test": cov_test, "problems": sorted(problems)})


def _token_examples(ctx: TaskContext, tokens: torch.Tensor, position: torch.Tensor,
                    label: torch.Tensor) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray]:
    """The activation at one position of each prompt `[N, T]`, the labels, and the kept prompts' indices; examples
    the store's exclusion rule would drop (an attention sink) are left out."""
    model, store = ctx.model, ctx.store
    acts = model.activations(tokens, ctx.hook)  # `[N, T, d]`
    keep = store.exclusion.mask(tokens, acts, model.special_ids, store.reference_norm)
    rows = torch.arange(len(tokens))
    kept = keep[rows, position]
    return ([acts[i, position[i]][None].float() for i in rows[kept].tolist()], label[kept].numpy().astype(bool),
            rows[kept].numpy())


def token_set(ctx: TaskContext, concept: str, n_train: int, n_test: int) -> ProbeSet:
    """A token-level concept (`TOKEN_CONCEPTS`) built on the subject model's tokenizer, disjoint words per split
    where the concept has words (pronoun, number) and different random draws otherwise. Test units: prompts,
    named by concept and index (seeded prompts, so the same for every dictionary)."""
    model = ctx.model
    bos, pad = special_ids(model)
    seed = stream(ctx.seed, f"sparse_probing/{concept}")
    if concept == "repeated_name":
        splits = [repeated_names(n, model.tokenize, seed + i, bos, pad) for i, n in enumerate((n_train, n_test))]
        examples = [_token_examples(ctx, s.tokens, s.position, s.label) for s in splits]
    else:
        make = {"pronoun": pronoun_concept, "number": number_concept}[concept]
        pc = make(n_train, n_test, model.tokenize, seed, bos, pad)
        examples = [_token_examples(ctx, s.tokens, s.length - 1, s.label) for s in (pc.train, pc.test)]
    (train, y_train, _), (test, y_test, kept) = examples
    cov = {"train_prompts": n_train, "test_prompts": n_test, "kept": [len(train), len(test)],
           "test_labels": [int((~y_test).sum()), int(y_test.sum())]}
    return ProbeSet(train, test, {concept: (y_train, y_test)}, [f"{concept}/{i}" for i in kept], "prompt", cov)


@dataclass
class SparseProbing(Task):
    ks: tuple[int, ...] = positive((1, 2, 5, 20))
    n_train_contexts: int = positive(512)  # genre
    n_eval_contexts: int = positive(256)  # at most one per eval document
    min_examples: int = positive(10)  # a genre needs this many contexts on each side of each split to be probed
    n_train_prompts: int = param(160, ge=4, even=True)  # per token-level concept (half each label)
    n_test_prompts: int = param(80, ge=2, even=True)
    concepts: tuple[str, ...] = param(("genre", *TOKEN_CONCEPTS), choices=("genre", *TOKEN_CONCEPTS))
    c: float = positive(1.0)  # inverse L2 strength of the logistic regressions

    name = "sparse_probing"
    description = ("probes for genre, pronoun, number and repeated names on each method's top-k features vs a dense "
                   "probe and DiffMean")
    needs_model = True
    topk_rows = False  # the features are chosen per problem here, so the top-k variants add nothing
    version = 2  # 2: DiffMean reference metrics

    def prepare(self, ctx: TaskContext) -> None:
        self._sets: dict[str, ProbeSet] = {}
        for concept in self.concepts:
            if concept == "genre":
                found = genre_set(ctx.store, self.n_train_contexts, self.n_eval_contexts, self.min_examples, ctx.seed)
                if found is not None:  # a corpus without genres (--text) leaves the concept out
                    self._sets[concept] = found
            else:
                self._sets[concept] = token_set(ctx, concept, self.n_train_prompts, self.n_test_prompts)
        if not self._sets:
            raise BenchError("sparse_probing: no concept has enough labelled examples; keep a token-level concept in "
                             "`concepts` or use a labelled corpus (the shipped one, or --text with a 'genre' field)")
        self._fit_references(ctx.seed)

    def _fit_references(self, seed: int) -> None:
        """The supervised references read the raw activations, not the dictionary: fitted, scored and summarised
        once per run, on the concepts' examples (`self._sets`)."""
        self._reference: dict[str, dict[str, dict[str, ProbeResult]]] = {}  # concept -> problem -> key -> scores
        for concept, ps in self._sets.items():
            raw_train, raw_test = _pool(ps.train, lambda x: x), _pool(ps.test, lambda x: x)
            self._reference[concept] = {p: {"dense": fit_probe(raw_train, ys[0], raw_test, ys[1], self.c),
                                            "diffmean": diffmean(raw_train, ys[0], raw_test, ys[1])}
                                        for p, ys in ps.problems.items()}
        self._reference_metrics = self._metrics(self._reference, REFERENCES, seed)

    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        dictionary = dictionary.to(ctx.device)
        encode = lambda x: dictionary.encode(x.to(ctx.device)).cpu()  # noqa: E731
        fits: dict[str, dict[str, dict[str, ProbeResult]]] = {}  # concept -> problem -> key -> test scores
        for concept, ps in self._sets.items():
            codes_train, codes_test = _pool(ps.train, encode), _pool(ps.test, encode)
            fits[concept] = {}
            for problem, (y_train, y_test) in ps.problems.items():
                row = {}
                for k in self.ks:
                    chosen = top_features(codes_train, y_train, k)
                    row[f"k{k}"] = fit_probe(codes_train[:, chosen], y_train, codes_test[:, chosen], y_test, self.c)
                fits[concept][problem] = row
        what = {f"k{k}": f"a probe on the top {k} features" if k > 1 else BEST_FEATURE for k in self.ks}
        metrics = {**self._metrics(fits, what, ctx.seed),
                   **self._reference_metrics}
        per_problem = {c: {p: {key: {"auroc": r.auroc, "accuracy": r.accuracy}
                               for key, r in {**self._reference[c][p], **fits[c][p]}.items()}
                           for p in rows} for c, rows in fits.items()}
        details = {"concepts": list(fits), "per_problem": per_problem,
                   "n_examples": {c: [len(ps.train), len(ps.test)] for c, ps in self._sets.items()},
                   "units": {c: {"unit": ps.unit, "n_test": len(ps.test_ids)} for c, ps in self._sets.items()},
                   "coverage": {c: ps.coverage for c, ps in self._sets.items()},
                   "references": self._references(),
                   "interval_note": "bootstrap over test units with each probe as fitted on train: test-sample "
                                    "variance only, not refitting the probe or re-choosing the features"}
        return TaskOutput(metrics, details)

    def _metrics(self, fits: dict[str, dict[str, dict[str, ProbeResult]]], keys: dict[str, str],
                 seed: int) -> dict[str, Metric]:
        """AUROC and balanced accuracy of each key's scores (`keys`: key -> what it reads), as means over concepts
        (`<name>`) and per concept (`<concept>_<name>` AUROC); `_name` spells the names."""

        def scored(concepts: list[str], key: str) -> list[Scored]:
            """Each concept's problems, weighted so that every concept counts equally in a mean over concepts."""
            return [Scored.of(self._sets[c].test_ids, r[key], 1.0 / len(fits[c]))
                    for c in concepts for r in fits[c].values()]

        every = list(fits)
        unit = self._sets[every[0]].unit if len({self._sets[c].unit for c in every}) == 1 else "example"
        of = lambda ev, description: Metric.of(ev, True, description, seed=seed)  # noqa: E731
        metrics: dict[str, Metric] = {}
        for key, what in keys.items():
            metrics[_name(key, "auroc")] = of(auroc_evidence(scored(every, key), unit),
                                              f"AUROC of {what}, mean over concepts")
            metrics[_name(key, "accuracy")] = of(accuracy_evidence(scored(every, key), unit),
                                                 f"balanced accuracy of {what}, mean over concepts")
        for concept in every:
            for key, what in keys.items():
                metrics[f"{concept}_{_name(key, 'auroc')}"] = of(auroc_evidence(scored([concept], key),
                                                                                self._sets[concept].unit),
                                                                 f"{concept}: AUROC of {what}")
        return metrics

    def _references(self) -> dict[str, dict]:
        """The supervised references as the leaderboard shows them: one row each, its metric in the method columns
        it is a bar for (column metric -> reference metric). The dense probe stands in every top-k column; DiffMean,
        one direction, beside the single best feature (k = 1)."""
        concepts = list(self._sets)
        dense = {}
        for k in self.ks:
            dense |= {f"auroc_k{k}": "dense_auroc", f"accuracy_k{k}": "dense_accuracy",
                      **{f"{c}_auroc_k{k}": f"{c}_dense_auroc" for c in concepts}}
        mean = {"auroc_k1": "diffmean_auroc", "accuracy_k1": "diffmean_accuracy",
                **{f"{c}_auroc_k1": f"{c}_diffmean_auroc" for c in concepts}} if 1 in self.ks else {}
        kind = "supervised reference"
        return {"dense probe": {"kind": kind, "metrics": dense}, "diffmean": {"kind": kind, "metrics": mean}}


def _name(key: str, stat: str) -> str:
    """Metric names: `auroc_k5` for a top-k probe, `dense_auroc` / `diffmean_auroc` for a reference."""
    return f"{key}_{stat}" if key in REFERENCES else f"{stat}_{key}"
