"""`concept_erasure`: can a concept be removed by ablating a few of a method's features, and at what cost?

For each concept (`concepts.py`: pronoun gender, grammatical number, document genre) and each k in `ks`, the k
features whose mean-pooled codes differ most between the classes on the training split (standardised difference of
class means) are set to their mean training code at every kept position, the reconstruction error kept; as a
control, k random features that fire on the concept's tokens are ablated the same way. Measured on held-out data:
- `probe`: accuracy of a logistic-regression probe retrained on the edited, mean-pooled training activations and
  tested on edited held-out ones (0.5 is chance; lower is better erasure);
- `behaviour` (pronoun, number): the model's probability of the right answer (" he"/" she", " is"/" are")
  renormalised over the two, with the edit spliced in at the hook;
- damage on unrelated corpus text with the same edit spliced in: KL(p_clean || p_edited) per token, the increase of
  cross-entropy, and the edit's size relative to the activation norm.
Baselines, the same for every method and in every result: LEACE (the provable linear eraser) and a mean-difference
projection, both fitted on the pooled training activations.

Summary per concept: `erasure` = mean over k of the share of the probe's above-chance accuracy removed, the same
for the random control and for behaviour, and the mean damage KL; averaged over concepts as `erasure`,
`damage_kl`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from bench.dictionary import Dictionary
from bench.seeds import rng, stream
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.concept_erasure.concepts import GENRES, PromptConcept, genre_contexts, number_concept, pronoun_concept
from tasks.concept_erasure.edits import Edit, FeatureAblation, MeanDifference, check_affine, leace
from tasks.probing import mean_by, top_features
from tasks.prompts import special_ids

CHANCE = 0.5


@dataclass
class Examples:
    """One split of a concept: token activations grouped into examples, pooled, and (for prompts) the tokens."""

    x: torch.Tensor  # `[n_tokens, d]` kept token activations, examples concatenated
    example: torch.Tensor  # `[n_tokens]` index of each token's example
    label: torch.Tensor  # `[n_examples]` bool
    tokens: torch.Tensor | None = None  # `[n_examples, T]` prompts (behaviour), else None
    keep: torch.Tensor | None = None  # `[n_examples, T]` bool, positions the edit touches
    last: torch.Tensor | None = None  # `[n_examples]` prediction position

    def pool(self, values: torch.Tensor) -> torch.Tensor:
        """`[n_tokens, w]` -> mean over each example's tokens `[n_examples, w]`."""
        return mean_by(values, self.example, len(self.label)).float()


@dataclass
class Concept:
    name: str
    train: Examples
    test: Examples
    answers: tuple[int, int] | None  # behaviour tokens for label False / True


@dataclass
class ConceptErasure(Task):
    ks: tuple[int, ...] = (2, 8, 32)
    n_train: int = 64  # prompts per prompt concept (half each label), genre: contexts per class
    n_test: int = 24
    n_genre_train: int = 24  # contexts per genre
    n_genre_test: int = 12
    n_damage_contexts: int = 2  # unrelated eval contexts for KL / CE damage
    c: float = 1.0  # inverse L2 strength of the probes

    name = "concept_erasure"
    description = "ablate the k features most tied to a concept: retrained-probe accuracy, behaviour, damage; vs LEACE"
    needs_model = True
    topk_rows = False

    # --- dictionary-independent work ---------------------------------------------------------------------------
    def prepare(self, ctx: TaskContext) -> None:
        model, store = ctx.model, ctx.store
        bos, pad = special_ids(model)
        seed = stream(ctx.seed, "concept_erasure")
        self.concepts: list[Concept] = []
        for make in (pronoun_concept, number_concept):
            pc: PromptConcept = make(self.n_train, self.n_test, model.tokenize, seed, bos, pad)
            self.concepts.append(Concept(pc.name, self._prompt_examples(ctx, pc.train), self._prompt_examples(ctx, pc.test),
                                         pc.answers))
        genre_train, genre_test = self._genre_examples(store.train, self.n_genre_train), self._genre_examples(
            store.eval, self.n_genre_test)
        if genre_train is not None and genre_test is not None:
            self.concepts.append(Concept("genre", genre_train, genre_test, None))

        # Damage text: eval contexts away from the genre examples, with their clean next-token distributions.
        used = set(genre_contexts(store.eval, self.n_genre_test)[0].tolist())
        spare = [i for i in range(store.eval.n_contexts) if i not in used][: self.n_damage_contexts]
        self._damage_tokens = torch.from_numpy(store.eval.tokens()[spare]).long()
        self._damage_keep = torch.from_numpy(store.eval.keep()[spare])
        self._damage_logp = F.log_softmax(model.logits(self._damage_tokens).float(), -1)
        self._damage_x = model.activations(self._damage_tokens, ctx.hook)[self._damage_keep]
        self._damage_norm = float(self._damage_x.norm(dim=-1).mean())
        self._damage_ce = self._ce(self._damage_logp)

        self.clean = {c.name: self._measure(ctx, c, None) for c in self.concepts}
        self.baselines: dict[str, dict[str, dict[str, float | None]]] = {}
        for c in self.concepts:
            pooled = c.train.pool(c.train.x)
            self.baselines[c.name] = {
                "leace": self._measure(ctx, c, leace(pooled, c.train.label)),
                "mean_difference": self._measure(ctx, c, MeanDifference(pooled, c.train.label)),
            }

    def _prompt_examples(self, ctx: TaskContext, ps) -> Examples:
        model, store = ctx.model, ctx.store
        acts = model.activations(ps.tokens, ctx.hook)
        keep = ps.real() & store.exclusion.mask(ps.tokens, acts, model.special_ids, store.reference_norm)
        example = torch.arange(len(ps.label))[:, None].expand_as(keep)[keep]
        return Examples(acts[keep], example, ps.label, ps.tokens, keep, ps.length - 1)

    @staticmethod
    def _genre_examples(split, n: int) -> Examples | None:
        idx, labels = genre_contexts(split, n, GENRES)
        if labels.sum() < 2 or (~labels).sum() < 2:
            return None  # a corpus without both genres (e.g. --text): the concept is left out
        keep = torch.from_numpy(split.keep()[idx])
        acts = torch.cat([split.context_activations(int(i), int(i) + 1) for i in idx])
        example = torch.arange(len(idx))[:, None].expand_as(keep)[keep]
        return Examples(acts[keep], example, labels)

    # --- measurements ------------------------------------------------------------------------------------------
    def _probe(self, train: torch.Tensor, y_train: torch.Tensor, test: torch.Tensor, y_test: torch.Tensor) -> float:
        scaler = StandardScaler().fit(train.numpy())
        probe = LogisticRegression(C=self.c, max_iter=2000).fit(scaler.transform(train.numpy()), y_train.numpy())
        return float((probe.predict(scaler.transform(test.numpy())) == y_test.numpy()).mean())

    def _splice(self, ctx: TaskContext, tokens: torch.Tensor, keep: torch.Tensor, edit: Edit | None) -> torch.Tensor:
        """Log-probabilities `[B, T, V]` with `edit` applied to the kept positions at the hook."""
        if edit is None:
            return F.log_softmax(ctx.model.logits(tokens).float(), -1)

        def hook(act: torch.Tensor) -> torch.Tensor:
            out = act.clone()
            out[keep.to(act.device)] = edit(act[keep.to(act.device)]).to(act.dtype)
            return out

        return F.log_softmax(ctx.model.logits(tokens, ctx.hook, hook).float(), -1)

    def _ce(self, logp: torch.Tensor) -> float:
        return float(-logp[:, :-1].gather(-1, self._damage_tokens[:, 1:, None]).mean())

    def _measure(self, ctx: TaskContext, c: Concept, edit: Edit | None,
                 pooled: tuple[torch.Tensor, torch.Tensor] | None = None, damage: bool = True) -> dict[str, float | None]:
        """Probe accuracy, behaviour and (if `damage`) damage for one edit (None: no edit). `pooled`: the edited
        mean-pooled train and test activations, where the caller has a cheaper way to them than editing every token."""
        if pooled is None:
            pooled = tuple(s.pool(s.x if edit is None else edit(s.x)) for s in (c.train, c.test))  # type: ignore[assignment]
        train, test = pooled
        out: dict[str, float | None] = {
            "probe": self._probe(train, c.train.label, test, c.test.label)}
        if c.answers is not None:
            t = c.test
            logp = self._splice(ctx, t.tokens, t.keep, edit)[torch.arange(len(t.label)), t.last]
            pair = logp[:, list(c.answers)].softmax(-1)  # renormalised over the two answers
            out["behaviour"] = float(pair[torch.arange(len(t.label)), t.label.long()].mean())
        if edit is None:
            out.update(kl=0.0, ce_increase=0.0, edit=0.0)
            return out
        if not damage:
            return out
        logp = self._splice(ctx, self._damage_tokens, self._damage_keep, edit)
        out["kl"] = max(float(F.kl_div(logp, self._damage_logp, log_target=True, reduction="none").sum(-1).mean()), 0.0)
        out["ce_increase"] = self._ce(logp) - self._damage_ce
        out["edit"] = float((edit(self._damage_x) - self._damage_x).norm(dim=-1).mean()) / self._damage_norm
        return out

    # --- per dictionary ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        dictionary = dictionary.to(ctx.device)
        generator = rng(ctx.seed, "concept_erasure/random_features")
        metrics: dict[str, Metric] = {}
        per_concept: dict[str, Any] = {}
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
            for k in self.ks:
                row: dict[str, Any] = {"k": k}
                chosen = {"top": ranked[:k],
                          "random": firing[torch.from_numpy(generator.permutation(len(firing))[:k])]}
                for which, features in chosen.items():
                    ablate = FeatureAblation(dictionary, features, values[features])
                    pooled = (ablate.pooled(pooled_x["train"], pooled_codes["train"]),
                              ablate.pooled(pooled_x["test"], pooled_codes["test"]))
                    # the random control answers "is this erasure more than chance?"; its damage is not needed
                    row[which] = self._measure(ctx, c, ablate, pooled, damage=which == "top")
                row["features"] = [int(i) for i in chosen["top"]]
                rows.append(row)
                if ctx.progress:
                    ctx.progress(len(rows) + len(self.ks) * len(per_concept), len(self.ks) * len(self.concepts))
            per_concept[c.name] = {"curve": rows, "clean": self.clean[c.name], **self.baselines[c.name]}
            metrics.update(self._summary(c, rows))
        for key, higher in (("erasure", True), ("erasure_random", True), ("behaviour_erasure", True),
                            ("behaviour_erasure_random", True), ("damage_kl", False)):
            vals = [v for c in self.concepts if (m := metrics.get(f"{c.name}_{key}")) is not None and (v := m.value) is not None]
            metrics[key] = Metric(float(np.mean(vals)) if vals else None, higher,  # type: ignore[arg-type]
                                  description=f"mean over concepts of <concept>_{key}")
        return TaskOutput(metrics, {"concepts": per_concept, "board_notes": [self._note()]})

    def _summary(self, c: Concept, rows: list[dict]) -> dict[str, Metric]:
        clean = self.clean[c.name]

        def removed(key: str, which: str) -> float | None:  # type: ignore[return]
            above = clean[key] - CHANCE
            if above <= 0.05:  # nothing to erase: the clean probe / model is at chance
                return None
            return float(np.mean([(clean[key] - r[which][key]) / above for r in rows]))

        out = {
            f"{c.name}_erasure": Metric(removed("probe", "top"), True, description=(
                "mean over k of the share of the retrained probe's above-chance accuracy removed (1 = chance)")),
            f"{c.name}_erasure_random": Metric(removed("probe", "random"), True, description=(
                "the same with k random firing features ablated (the control)")),
            f"{c.name}_damage_kl": Metric(float(np.mean([r["top"]["kl"] for r in rows])), False, description=(
                "mean over k of KL(clean || edited) per token on unrelated text")),
        }
        if c.answers is not None:
            out[f"{c.name}_behaviour_erasure"] = Metric(removed("behaviour", "top"), True, description=(
                "mean over k of the share of the model's above-chance answer probability removed"))
            out[f"{c.name}_behaviour_erasure_random"] = Metric(removed("behaviour", "random"), True, description=(
                "the same with k random firing features ablated (the control)"))
        return out

    def _note(self) -> str:
        parts = []
        for c in self.concepts:
            clean, b = self.clean[c.name], self.baselines[c.name]
            beh = lambda d: f", behaviour {d['behaviour']:.2f}" if "behaviour" in d else ""  # noqa: E731
            parts.append(f"{c.name}: clean probe {clean['probe']:.2f}{beh(clean)}; LEACE probe {b['leace']['probe']:.2f}"
                         f"{beh(b['leace'])}, KL {b['leace']['kl']:.3f}")
        return "concept_erasure (k = " + ", ".join(map(str, self.ks)) + "): " + "; ".join(parts)
