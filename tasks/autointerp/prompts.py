"""The prompts: explanation (explainer), detection and simulation (scorer).

Written for small instruct judges as much as for large ones (see docs/autointerp.md): the explainer also gets
the list of marked tokens with counts, and detection shows the excerpt before asking about the explanation.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

import numpy as np

from bench.judge.base import Choice, Generate, Simulate
from tasks.autointerp.excerpts import Excerpt

MARK_FRACTION = 0.25  # tokens at or above this fraction of the strongest shown activation are marked

EXPLAIN_SYSTEM = ("You are studying one neuron of a language model. You read text excerpts where it fires and "
                  "say in a short phrase what it responds to.")
DETECT_SYSTEM = "You check whether a text excerpt matches the description of a neuron of a language model."
SIMULATE_SYSTEM = ("You predict, token by token, how strongly a neuron of a language model fires on a text, "
                   "given a description of what the neuron responds to.")


def display(piece: str) -> str:
    """A token's text as one printable piece: newlines and tabs would break the line formats."""
    return piece.replace("\r", "").replace("\n", "↵").replace("\t", "⇥")


def render(excerpt: Excerpt, strings: Mapping[int, str], threshold: float | None = None) -> str:
    """The excerpt as text; tokens with activation >= threshold are marked <<like this>>."""
    out = []
    for token, act in zip(excerpt.tokens, excerpt.acts, strict=True):
        piece = display(strings[int(token)])
        if threshold is not None and act > 0 and act >= threshold:
            stripped = piece.lstrip()
            piece = f"{piece[: len(piece) - len(stripped)]}<<{stripped}>>"
        out.append(piece)
    return "".join(out).strip()


def mark_threshold(excerpts: list[Excerpt]) -> float:
    return MARK_FRACTION * float(max(e.acts.max() for e in excerpts))


# One worked example per prompt: small judges copy its form (a concrete phrase; one line per token, a digit each).
EXPLAIN_EXAMPLE = (
    "Example 1.\n1. they sat on the river <<bank>> and\n2. money from the <<bank>> was\n"
    "Marked tokens (times marked): bank (2)\nAnswer: the word \"bank\"\n\n"
    "Example 2.\n1. she <<quickly>> ran home\n2. he spoke <<softly>> and <<slowly>>\n"
    "Marked tokens (times marked): quickly (1), softly (1), slowly (1)\nAnswer: adverbs ending in -ly\n\n")


def explain_request(excerpts: list[Excerpt], strings: Mapping[int, str], max_listed: int = 12) -> Generate:
    threshold = mark_threshold(excerpts)
    lines = [f"{i}. {render(e, strings, threshold)}" for i, e in enumerate(excerpts, 1)]
    marked = Counter(display(strings[int(t)]).strip() or "(space)" for e in excerpts
                     for t, a in zip(e.tokens, e.acts, strict=True) if a > 0 and a >= threshold)
    listed = ", ".join(f"{tok} ({n})" for tok, n in marked.most_common(max_listed))
    user = ("Each excerpt below marks <<like this>> the tokens where the neuron fires most. Say what the neuron "
            "fires on, as concretely as the marks allow: if it is always the same word, name that word.\n\n"
            + EXPLAIN_EXAMPLE + "Now this neuron.\n" + "\n".join(lines)
            + f"\nMarked tokens (times marked): {listed}\nAnswer with one short phrase, nothing else.")
    return Generate((("system", EXPLAIN_SYSTEM), ("user", user)), max_tokens=32)


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
    user = (f"Text: {render(excerpt, strings)}\n\nNeuron description: {explanation}\n\n"
            "Does the text contain tokens that match the description? Answer yes or no.")
    return Choice((("system", DETECT_SYSTEM), ("user", user)), ("yes", "no"))


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
