"""`absorption`: when a letter's main features fail to fire, do other features carry its probe direction instead?

Feature absorption (Chanin et al. 2024, "A is for Absorption"; SAEBench's absorption eval): a feature that should
fire on every word starting with S stays silent on some of them because a more specific feature ("short") has
absorbed the direction. Measured on first letters, where the truth is known for every word:

1. Words (`words.py`): single-token lower-case words of the shipped corpus, up to `words_per_letter` per letter,
   split by word into train and test. Activations at the hook at the word's token, after a fixed in-context
   prefix of "<word> has the first letter: <L>" examples (harvested once, dictionary-independent).
2. Probe: one-vs-rest logistic regressions on the standardised train activations, a letter's prediction the
   largest decision. Its held-out accuracy is `probe_accuracy` (unit: word), beside chance (the largest letter's
   share of the test words). Unless it beats chance by `min_margin`, the letter is not linearly readable here:
   details say so and flag the absorption figures, which are still computed.
3. Per dictionary (`measure.py`): each letter's main features (writing along the probe, most letter-specific on
   the train words, grown while a k-sparse probe's F1 jumps), then on every test word the probe gets right the
   absorption fraction and whether it is fully absorbed. `absorption` and `full_absorption` are means over the
   letter's words, then over letters (as SAEBench aggregates), lower is better. Details say, per letter, where
   the main features carry the projection and where no feature does (a low absorption then means no letter feature,
   not a clean one: `details.no_letter_features`).

Differences from SAEBench: the probe's projection is measured from the dictionary's offset, t = (x - decode(0)) . p,
not x . p, so that a decoder bias is not counted as signal the features failed to carry; a feature's share is its
code times what it writes along p, c_i (W_i . p) with W_i = decode(e_i) - decode(0), which is SAEBench's
activation x cosine for unit-norm decoder rows; main features are chosen on the train words (SAEBench uses its test
words) among the features writing along the probe, ranked by a standardised difference of means (SAEBench: an
L1-penalised probe on the codes); a word counts when the probe's top letter is right (SAEBench: the letter's own
probe fires).

A dense code (PCA, random directions, neurons: most features nonzero on every word) has no feature that "fails to
fire" in the sense meant here: its main features fire on about half the words whatever they are, and its
absorption reads how much of the letter's probe projection lies outside its best-aligned features. Such rows are
scored and marked (`details["dense_code"]`); compare them with the SAEs on the top-k rows (matched sparsity).

Uncertainty: the unit is a test word (id: the word), the same for every dictionary, so methods are paired; the
probe and the main features stay as fitted on train, so the intervals cover the test words, not refitting.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from bench.corpus import load_corpus
from bench.dictionary import Dictionary
from bench.errors import BenchError
from bench.specs import fraction, param, positive
from bench.stats import Evidence
from tasks.absorption.measure import (FIRES, absorption_fraction, affine_error, full_absorption, letter_scores,
                                      main_features, write_vectors)
from tasks.absorption.words import (corpus_words, letter_index, prefix_ids, prompts, single_token_words,
                                    split_words)
from tasks.base import Metric, Task, TaskContext, TaskOutput
from tasks.probing import PROBE_SOURCES
from tasks.prompts import special_ids

DENSE = 0.25  # a code with more than this share of features nonzero on a typical word is dense
MAX_AFFINE_ERROR = 1e-3
N_EXAMPLES = 3  # fully absorbed words kept per letter in the details
UNACCOUNTED = 0.5  # share of scored words carried by no main or absorbing feature above which details warn


@functools.cache
def _shipped_words(min_length: int) -> tuple[str, ...]:
    return tuple(corpus_words(load_corpus(), min_length))


@dataclass
class Absorption(Task):
    words_per_letter: int = positive(80)  # drawn at random from the letter's words
    min_words: int = param(20, ge=4)  # a letter with fewer single-token corpus words is dropped
    test_fraction: float = param(0.3, gt=0, le=0.5)  # of each letter's words, held out to score
    min_length: int = positive(2)  # letters per word
    c: float = positive(0.1)  # inverse L2 strength of the letter probes
    min_margin: float = fraction(0.2)  # the probe's accuracy must beat chance by this for the signal to count
    min_positives: int = positive(8)  # test words the probe gets right a letter needs to be scored
    max_k: int = positive(10)  # most main features per letter
    f1_jump: float = fraction(0.03)  # another main feature must raise the k-sparse probe's F1 by this
    absorber_cos: float = fraction(0.1)  # cosine with the probe an absorbing feature needs (absorption fraction)
    full_cos: float = fraction(0.025)  # cosine with the probe the top feature needs (full absorption)
    share: float = fraction(0.4)  # share of the projection the absorbing features must carry
    max_absorbers: int = positive(3)  # features that may share the absorbed projection
    batch_size: int = positive(256)  # prompts per forward pass

    name = "absorption"
    description = "first-letter probe: share of its projection other features carry where the main ones are silent"
    needs_model = True

    def prepare(self, ctx: TaskContext) -> None:
        model = ctx.model
        vocab = single_token_words(list(_shipped_words(self.min_length)), model.tokenize)
        split = split_words(list(vocab), self.words_per_letter, self.min_words, self.test_fraction, ctx.seed)
        if len(split.letters) < 2:
            raise BenchError(f"absorption: only {len(split.letters)} letters have {self.min_words} single-token words "
                             "in the corpus on this tokenizer; lower min_words (--tasks 'absorption[min_words=5]')")
        bos, _ = special_ids(model)
        self._prefix = prefix_ids(model.tokenize, bos)
        x_train, train = self._harvest(ctx, split.train, vocab)
        x_test, test = self._harvest(ctx, split.test, vocab)
        # A letter left without train or test words by the exclusion rule cannot be probed or scored.
        letters = tuple(c for c in split.letters
                        if any(w[0] == c for w in train) and any(w[0] == c for w in test))
        if len(letters) < 2:
            raise BenchError("absorption: fewer than 2 letters keep words after the exclusion rule; raise "
                             "words_per_letter")
        keep_tr = np.array([w[0] in letters for w in train])
        keep_te = np.array([w[0] in letters for w in test])
        self._train = [w for w, k in zip(train, keep_tr, strict=True) if k]
        self._test = [w for w, k in zip(test, keep_te, strict=True) if k]
        self._x_train = x_train[torch.from_numpy(keep_tr)].to(ctx.device)
        self._x_test = x_test[torch.from_numpy(keep_te)].to(ctx.device)
        self._letters = letters
        self._y_train, self._y_test = letter_index(self._train, letters), letter_index(self._test, letters)
        self._ids = [f"word/{w}" for w in self._test]
        self._fit_probe(ctx)
        self._words_info = {
            "n_train": len(self._train), "n_test": len(self._test), "letters": "".join(letters),
            "dropped_letters": {**split.dropped, **{c: "no train or test word kept" for c in split.letters
                                                    if c not in letters}},
            "available_per_letter": split.available, "single_token_corpus_words": len(vocab),
            "excluded": (len(split.train) - len(train)) + (len(split.test) - len(test)),
            "prompt": model.tokenizer.decode(self._prefix + [vocab[self._test[0]]]),
            "position": "the word's token (the last of the prompt)"}

    def _harvest(self, ctx: TaskContext, words: list[str], vocab: dict[str, int]) -> tuple[torch.Tensor, list[str]]:
        """Activations `[n_kept, d]` at each word's token, and the kept words (the store's exclusion rule drops an
        attention sink)."""
        model, store = ctx.model, ctx.store
        tokens = prompts(self._prefix, [vocab[w] for w in words])
        xs, kept = [], []
        for batch in tokens.split(self.batch_size):
            acts = model.activations(batch, ctx.hook)  # `[B, T, d]`
            keep = store.exclusion.mask(batch, acts.cpu(), model.special_ids, store.reference_norm)[:, -1]
            xs.append(acts[:, -1].float().cpu()[keep])
            kept.append(keep)
        keep = torch.cat(kept).numpy()
        return torch.cat(xs), [w for w, k in zip(words, keep, strict=True) if k]

    def _fit_probe(self, ctx: TaskContext) -> None:
        """One-vs-rest logistic probes on the standardised train activations; their unit directions in activation
        space `[L, d]` and the test predictions."""
        x_train, x_test = self._x_train.double().cpu().numpy(), self._x_test.double().cpu().numpy()
        scaler = StandardScaler().fit(x_train)
        z_train, z_test = scaler.transform(x_train), scaler.transform(x_test)
        coef = np.zeros((len(self._letters), x_train.shape[1]))
        decision = np.zeros((len(x_test), len(self._letters)))
        for j in range(len(self._letters)):
            fitted = LogisticRegression(C=self.c, max_iter=2000, class_weight="balanced").fit(z_train,
                                                                                               self._y_train == j)
            coef[j] = fitted.coef_[0]
            decision[:, j] = fitted.decision_function(z_test)
        raw = coef / scaler.scale_  # the probe's weights on the raw activations: decision = raw . x + const
        self._dirs = torch.from_numpy(raw / np.linalg.norm(raw, axis=1, keepdims=True)).float().to(ctx.device)
        pred = decision.argmax(1)
        self._correct = pred == self._y_test
        n_test = np.bincount(self._y_test, minlength=len(self._letters))
        self._chance = float(n_test.max() / n_test.sum())
        accuracy = float(self._correct.mean())
        self._signal = accuracy >= self._chance + self.min_margin
        self._accuracy_metric = Metric.of(
            Evidence("word", self._ids, "mean", {"x": self._correct.astype(float)}, sources=PROBE_SOURCES), True,
            "held-out accuracy of the first-letter probe on the raw activations (dictionary-independent)", ctx.seed)
        self._positives = {c: np.flatnonzero(self._correct & (self._y_test == j)) for j, c in enumerate(self._letters)}
        self._probe_info = {
            "accuracy": accuracy, "chance": self._chance, "min_margin": self.min_margin, "signal": bool(self._signal),
            "accuracy_interval": self._accuracy_metric.interval,
            "per_letter": {c: {"f1": float(f1_score(self._y_test == j, pred == j, zero_division=0.0)),
                               "n_train": int((self._y_train == j).sum()), "n_test": int(n_test[j]),
                               "true_positives": len(self._positives[c])}
                           for j, c in enumerate(self._letters)}}
        if not self._signal:
            self._probe_info["note"] = (f"the probe's held-out accuracy {accuracy:.2f} does not beat chance "
                                        f"{self._chance:.2f} by {self.min_margin}: the first letter is barely linearly "
                                        "readable at this hook, so the absorption figures say little")

    def evaluate(self, dictionary: Dictionary, ctx: TaskContext) -> TaskOutput:
        dictionary = dictionary.to(ctx.device)
        b, w = write_vectors(dictionary)
        along = w @ self._dirs.T  # `[m, L]` W_i . p per letter
        cos = along / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        codes_train, codes_test = dictionary.encode(self._x_train), dictionary.encode(self._x_test)
        err = affine_error(dictionary, codes_test[:16], b, w)
        if not err <= MAX_AFFINE_ERROR:
            raise BenchError(f"absorption: this dictionary's decode is not affine in its codes (decode(c) != b + c W, "
                             f"relative error {err:.2g}); the task needs a linear decoder to split a projection "
                             "among features")
        scores = letter_scores(codes_train.cpu().numpy(), self._y_train, len(self._letters))
        codes_np = codes_train.cpu().numpy()
        scored = [c for c in self._letters if len(self._positives[c]) >= self.min_positives]
        unscored = {c: f"{len(self._positives[c])} test words the probe gets right (needs {self.min_positives})"
                    for c in self._letters if c not in scored}
        ids, frac_cols, full_cols, per_letter = [], [], [], {}
        for g, c in enumerate(scored):
            j = self._letters.index(c)
            main, f1s = main_features(codes_np, self._y_train == j, scores[j], cos[:, j].cpu().numpy(), self.max_k,
                                      self.f1_jump)
            rows = torch.from_numpy(self._positives[c]).to(ctx.device)
            codes, x = codes_test[rows], self._x_test[rows]
            target = (x - b) @ self._dirs[j]
            contrib = codes * along[:, j]
            frac = absorption_fraction(contrib, target, main, cos[:, j], self.absorber_cos, self.share,
                                       self.max_absorbers).cpu().numpy()
            full, top = full_absorption(codes, contrib, target, main, cos[:, j], self.full_cos, self.share)
            full, top = full.cpu().numpy(), top.cpu().numpy()
            col = np.full((len(rows), len(scored)), np.nan)
            col[:, g] = frac
            frac_cols.append(col)
            col = np.full((len(rows), len(scored)), np.nan)
            col[:, g] = full
            full_cols.append(col)
            ids += [self._ids[i] for i in self._positives[c]]
            fires = (codes[:, main] > FIRES).any(1).float().mean().item() if main else 0.0
            # Where the main features carry at least `share` of the projection, and where neither they nor absorbers
            # do (the projection spread thin over many features: no letter feature, rather than a clean one).
            t_np = target.cpu().numpy()
            main_sum = contrib[:, main].sum(1).cpu().numpy()
            seen, most = t_np > 0, main_sum >= self.share * t_np
            per_letter[c] = {
                "n_words": len(rows), "absorption": float(frac.mean()), "full_absorption": float(full.mean()),
                "main_features": main, "main_cos": [round(float(cos[i, j]), 4) for i in main],
                "f1_by_k": [round(f, 4) for f in f1s], "main_fires": fires,
                "main_carries": float((seen & most).mean()),
                "unaccounted": float((seen & ~most & (frac == 0)).mean()),
                "examples": [{"word": self._test[self._positives[c][i]], "feature": int(top[i]),
                              "cos": round(float(cos[top[i], j]), 4),
                              "share": round(float(contrib[i, top[i]] / target[i]), 4)}
                             for i in np.flatnonzero(full)[:N_EXAMPLES]]}
        density = float((codes_test > FIRES).float().mean())
        details: dict[str, Any] = {
            "words": self._words_info, "probe": self._probe_info, "per_letter": per_letter,
            "scored_letters": "".join(scored), "unscored_letters": unscored,
            "mean_main_features": float(np.mean([len(v["main_features"]) for v in per_letter.values()]))
            if per_letter else 0.0,
            **{f"mean_{k}": float(np.mean([v[k] for v in per_letter.values()])) if per_letter else 0.0
               for k in ("main_fires", "main_carries", "unaccounted")},
            "code_density": density, "affine_error": err,
            "board_notes": [self._note(ctx)],
            "interval_note": "bootstrap over the test words the probe gets right, with the probe and the main "
                             "features held as chosen on train: test-word variance only"}
        if density > DENSE:
            details["dense_code"] = (f"{density:.0%} of the features are nonzero on a typical word: main features "
                                     "rarely fail to fire in a dense code, so absorption here reads how much of the "
                                     "probe projection lies outside the best-aligned features; compare the top-k rows")
            details["board_notes"].append("absorption: a dense code's main features fire on most words, so its "
                                          "absorption is not the SAE sense of the word; compare on the top-k rows")
        if per_letter and details["mean_unaccounted"] > UNACCOUNTED:
            details["no_letter_features"] = (
                f"on {details['mean_unaccounted']:.0%} of the scored words neither the main features nor up to "
                f"{self.max_absorbers} aligned others carry {self.share} of the probe projection: it is spread over "
                "many features, so "
                "a low absorption here means the letter has no feature, not a clean one")
            details["board_notes"].append("absorption: where details.no_letter_features is set, most of the letter "
                                          "projection is carried by no single feature; low absorption there is not "
                                          "a clean letter feature")
        metrics = {"probe_accuracy": self._accuracy_metric}
        if not scored:
            details["skipped"] = (f"no letter has {self.min_positives} test words the probe gets right: nothing to "
                                  "score (raise words_per_letter, or lower min_positives)")
            return TaskOutput(metrics, details)
        flag = "" if self._signal else " (flagged: the probe barely beats chance)"
        weights = {"grouped": True}
        metrics["absorption"] = Metric.of(
            Evidence("word", ids, "mean", {"x": np.concatenate(frac_cols)}, weights, PROBE_SOURCES), False,
            "mean absorption fraction: share of the letter probe's projection carried by non-main features, over "
            "the words the probe gets right, mean over letters" + flag, ctx.seed)
        metrics["full_absorption"] = Metric.of(
            Evidence("word", ids, "mean", {"x": np.concatenate(full_cols)}, weights, PROBE_SOURCES), False,
            "share of those words whose main features are silent while one other feature carries the projection, "
            "mean over letters" + flag, ctx.seed)
        return TaskOutput(metrics, details)

    def _note(self, ctx: TaskContext) -> str:
        p = self._probe_info
        verdict = "" if self._signal else "; the probe barely beats chance, so absorption says little here"
        return (f"absorption: first-letter probe accuracy {p['accuracy']:.2f} on {len(self._test)} held-out words "
                f"({len(self._letters)} letters, chance {p['chance']:.2f}) at {ctx.hook}{verdict}; SAEBench finds the "
                "measure most telling on large models and wide SAEs")
