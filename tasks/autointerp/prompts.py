"""The prompts: explanation (explainer), detection and simulation (scorer).

Written for small instruct judges as much as for large ones (see docs/autointerp.md): the explainer also gets
the list of marked tokens with counts. Scoring prompts put what a feature's samples share first (instructions,
then the explanation) and the excerpt last, so an in-process judge pays for the shared part once per feature.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable, Mapping

import numpy as np

from bench.judge.base import Choice, Generate, Simulate
from tasks.autointerp.excerpts import Excerpt

MARK_FRACTION = 0.25  # tokens at or above this fraction of the strongest shown activation are marked

EXPLAIN_SYSTEM = ("You are studying one neuron of a language model. You read text excerpts where it fires and "
                  "say in a short phrase what it responds to.")
DETECT_SYSTEM = ("You check descriptions of neurons of a language model. You get a neuron's description and a text "
                 "excerpt. Answer yes if the text contains tokens that match the description, no if it does not. "
                 "Answer yes or no only.")
FUZZ_SYSTEM = ("You check descriptions of neurons of a language model. You get a neuron's description and a text "
               "excerpt in which some tokens are marked <<like this>>. Answer yes if the marked tokens are what the "
               "description describes, no if the marks sit on other tokens. Answer yes or no only.")
SIMULATE_SYSTEM = ("You predict, token by token, how strongly a neuron of a language model fires on a text, "
                   "given a description of what the neuron responds to.")


def display(piece: str) -> str:
    """A token's text as one printable piece: newlines and tabs would break the line formats."""
    return piece.replace("\r", "").replace("\n", "↵").replace("\t", "⇥")


def render(excerpt: Excerpt, strings: Mapping[int, str], threshold: float | None = None,
           marks: np.ndarray | None = None) -> str:
    """The excerpt as text; tokens with activation >= threshold, or where `marks` (bool `[window]`) is set, are
    marked <<like this>>."""
    if marks is None:
        marks = (excerpt.acts > 0) & (excerpt.acts >= threshold) if threshold is not None else \
            np.zeros(len(excerpt.tokens), bool)
    out = []
    for token, mark in zip(excerpt.tokens, marks, strict=True):
        piece = display(strings[int(token)])
        if mark:
            stripped = piece.lstrip()
            piece = f"{piece[: len(piece) - len(stripped)]}<<{stripped}>>"
        out.append(piece)
    return "".join(out).strip()


def mark_threshold(excerpts: list[Excerpt]) -> float:
    return MARK_FRACTION * float(max(e.acts.max() for e in excerpts))


# No worked example: the 1.5B judge copied them into explanations of unrelated features ("adverbs ending in -ly").
# The format is asked for in words, after the excerpts, as a fill-in form holding the feature's most often marked
# token. Measured on the default run's controls and dense features: with the instructions first, or without the
# form, the judge named a neighbouring word ("apostles" for a feature firing on " also"); with a placeholder
# ('the word "WORD"', '"<that word>"') it returned the placeholder for features whose marks differ.
EXPLAIN_HEAD = "The neuron fires on the tokens marked <<like this>> in the excerpts below.\n"


def explain_tail(most_marked: str) -> str:
    return ("Describe the marked tokens, not the other words. If the same word is marked in every excerpt, answer "
            f"exactly: the word \"{most_marked}\". Otherwise answer with a short phrase naming what the marked "
            "tokens have in common. Answer with the phrase only.")


# Worked examples this prompt showed in earlier versions, as (a term of the example's answer, a test of whether the
# marked tokens bear it out). An explanation using the term for tokens that do not is a copy (`copied`).
WATCHED_EXAMPLES: dict[str, Callable[[str], bool]] = {
    "bank": lambda token: "bank" in token,  # the word "bank"
    "adverb": lambda token: token.endswith("ly"),  # adverbs ending in -ly
    "-ly": lambda token: token.endswith("ly"),
    '"word"': lambda token: token == "word",  # a placeholder form ('the word "WORD"') returned unfilled
}


def copied(explanation: str, marked: Iterable[str]) -> list[str]:
    """The terms of `WATCHED_EXAMPLES` that `explanation` uses although none of the `marked` tokens the explainer
    was shown bears them out (empty: not a copy)."""
    text, tokens = explanation.lower(), [t.strip().lower() for t in marked]
    return [term for term, fits in WATCHED_EXAMPLES.items() if term in text and not any(map(fits, tokens))]


def marked_tokens(excerpts: list[Excerpt], strings: Mapping[int, str]) -> list[str]:
    """The tokens the explainer sees marked, in order (with repeats)."""
    threshold = mark_threshold(excerpts)
    return [display(strings[int(t)]).strip() or "(space)" for e in excerpts
            for t, a in zip(e.tokens, e.acts, strict=True) if a > 0 and a >= threshold]


def explain_request(excerpts: list[Excerpt], strings: Mapping[int, str], max_listed: int = 12) -> Generate:
    threshold = mark_threshold(excerpts)
    lines = [f"{i}. {render(e, strings, threshold)}" for i, e in enumerate(excerpts, 1)]
    counts = Counter(marked_tokens(excerpts, strings)).most_common(max_listed)
    listed = ", ".join(f"{tok} ({n})" for tok, n in counts)
    user = (EXPLAIN_HEAD + f"Marked tokens (times marked): {listed}\n\n" + "\n".join(lines) + "\n\n"
            + explain_tail(counts[0][0] if counts else ""))
    return Generate((("system", EXPLAIN_SYSTEM), ("user", user)), max_tokens=24)


def clean_explanation(text: str) -> str:
    """First non-empty line, without quotes or a leading label; at most 200 characters."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    for label in ("explanation:", "answer:", "description:"):
        if line.lower().startswith(label):
            line = line[len(label):].strip()
    line = line.strip("` *")
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
        line = line[1:-1]  # quotes around the whole answer, not those around a word in it
    return line[:200]


def detect_request(excerpt: Excerpt, explanation: str, strings: Mapping[int, str]) -> Choice:
    """Everything shared by a feature's samples comes first (instructions, then the explanation), the excerpt
    last: an in-process judge evaluates the shared part once per feature (its KV cache keeps the longest common
    prefix), and each sample costs only its own tokens."""
    user = f"Neuron description: {explanation}\nText: {render(excerpt, strings)}"
    return Choice((("system", DETECT_SYSTEM), ("user", user)), ("yes", "no"))


def fuzz_request(excerpt: Excerpt, marks: np.ndarray, explanation: str, strings: Mapping[int, str]) -> Choice:
    """The excerpt with `marks` (bool `[window]`) marked; laid out like `detect_request`."""
    user = f"Neuron description: {explanation}\nText: {render(excerpt, strings, marks=marks)}"
    return Choice((("system", FUZZ_SYSTEM), ("user", user)), ("yes", "no"))


def true_marks(excerpt: Excerpt) -> np.ndarray:
    """bool `[window]`: the tokens at or above `MARK_FRACTION` of the excerpt's own peak (at least the peak)."""
    return (excerpt.acts > 0) & (excerpt.acts >= MARK_FRACTION * float(excerpt.acts.max()))


def fuzzed_marks(excerpt: Excerpt, rng: np.random.Generator) -> np.ndarray:
    """As many marks as `true_marks`, moved to tokens the true marks leave out (all of them if there are fewer)."""
    truth = true_marks(excerpt)
    others = np.flatnonzero(~truth)
    out = np.zeros_like(truth)
    out[rng.choice(others, size=min(int(truth.sum()), len(others)), replace=False)] = True
    return out


SIMULATE_EXAMPLE = ("Example. Neuron description: names of animals\nText: the dog barked\n"
                    "Answer:\nthe\t0\n dog\t9\n barked\t1\n\n")


def simulate_request(excerpt: Excerpt, explanation: str, strings: Mapping[int, str]) -> Simulate:
    user = ("For every token of the text, in order, write one line: the token, a tab, then a digit from 0 (the "
            "neuron does not fire) to 9 (it fires most strongly). Most tokens are 0.\n\n" + SIMULATE_EXAMPLE
            + f"Now. Neuron description: {explanation}\nText: {render(excerpt, strings)}\nAnswer:")
    return Simulate((("system", SIMULATE_SYSTEM), ("user", user)), tuple(display(strings[int(t)]) for t in excerpt.tokens))


def activation_digits(acts: np.ndarray, scale: float) -> list[int]:
    """Activations on the 0..9 scale of the simulation prompt (for showing examples beside predictions)."""
    if scale <= 0:
        return [0] * len(acts)
    return [int(round(9 * min(max(a, 0.0) / scale, 1.0))) for a in acts]
