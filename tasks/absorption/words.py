"""The words the first-letter probe reads, split by word, and the prompts their activations are read in.

Words are lower-case alphabetic strings written in the shipped corpus that the subject model's tokenizer makes one
token after a space (checked on the tokenizer at hand, never assumed), so the activation at that token is the
model's view of the whole word. Each letter keeps up to `per_letter` of its words, drawn at random (seeded) from
all of them, never the first n; letters with fewer than `min_words` are dropped. Each letter's words are split
into train and test at random, so the probe is scored on words it never saw and every kept letter is on both sides.

A prompt is a fixed in-context prefix of worked examples followed by the word, after SAEBench's "{word} has the
first letter:" template:

    "\n house has the first letter: H\n {word}"

The activation is read at the word's token, where SAEBench reads it (the tokens of the template after the word
cannot reach it in a causal model, so they are not run). The examples are the same for every word, so every prompt
has the same length and the batch needs no padding; their words are left out of the word list. One example: on
SmolLM2 (layer 12, 60 words per letter) the probe reads 0.70 of held-out words with it and 0.67 with three, whose
prompts cost 2.6 times as much to run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from bench.corpus import Document
from bench.seeds import rng
from tasks.prompts import Tokenize

LETTERS = "abcdefghijklmnopqrstuvwxyz"
EXAMPLES = ("house",)  # in-context examples (distinct letters), never among the scored words
EXAMPLE_TEMPLATE = " {word} has the first letter: {letter}\n"
_WORD = re.compile(r"\b[a-z]+\b")


def corpus_words(docs: list[Document], min_length: int) -> list[str]:
    """Distinct lower-case alphabetic words written in the documents, at least `min_length` letters, sorted."""
    found: set[str] = set()
    for doc in docs:
        found.update(_WORD.findall(doc.text))
    return sorted(w for w in found if len(w) >= min_length)


def single_token_words(words: list[str], tokenize: Tokenize) -> dict[str, int]:
    """The words that are one token after a space, with that token's id (in the order given)."""
    out: dict[str, int] = {}
    for w in words:
        ids = tokenize(" " + w)
        if len(ids) == 1:
            out[w] = ids[0]
    return out


@dataclass(frozen=True)
class WordSplit:
    """Words of the kept letters, disjoint between train and test; `dropped`: letters left out, with their count."""

    train: list[str]
    test: list[str]
    letters: tuple[str, ...]
    available: dict[str, int] = field(default_factory=dict)  # per kept letter, its words before sampling
    dropped: dict[str, int] = field(default_factory=dict)


def split_words(words: list[str], per_letter: int, min_words: int, test_fraction: float, seed: int) -> WordSplit:
    """Up to `per_letter` words of each letter drawn at random (seeded), letters with fewer than `min_words` dropped,
    each letter's words split into train and test (at least one word on each side)."""
    by_letter: dict[str, list[str]] = {c: [] for c in LETTERS}
    for w in sorted(set(words)):
        if w[0] in by_letter and w not in EXAMPLES:
            by_letter[w[0]].append(w)
    gen = rng(seed, "absorption/words")
    train, test, letters, available, dropped = [], [], [], {}, {}
    for c in LETTERS:  # one draw per letter in a fixed order: a letter's sample does not move when another's does
        mine = by_letter[c]
        order = gen.permutation(len(mine))
        if len(mine) < min_words:
            dropped[c] = len(mine)
            continue
        picked = [mine[i] for i in order[:per_letter]]
        n_test = min(max(1, round(test_fraction * len(picked))), len(picked) - 1)
        test += picked[:n_test]
        train += picked[n_test:]
        letters.append(c)
        available[c] = len(mine)
    return WordSplit(sorted(train), sorted(test), tuple(letters), available, dropped)


def prefix_ids(tokenize: Tokenize, bos: int | None) -> list[int]:
    """The in-context examples every prompt starts with, as token ids (BOS first where the model uses one)."""
    text = "\n" + "".join(EXAMPLE_TEMPLATE.format(word=w, letter=w[0].upper()) for w in EXAMPLES)
    return ([bos] if bos is not None else []) + tokenize(text)


def prompts(prefix: list[int], word_ids: list[int]) -> torch.Tensor:
    """`[N, len(prefix) + 1]` token ids: the prefix, then each word's token (the last position)."""
    out = torch.empty(len(word_ids), len(prefix) + 1, dtype=torch.long)
    out[:, :-1] = torch.tensor(prefix, dtype=torch.long)
    out[:, -1] = torch.tensor(word_ids, dtype=torch.long)
    return out


def letter_index(words: list[str], letters: tuple[str, ...]) -> np.ndarray:
    """`[n]` each word's first letter as an index into `letters`."""
    where = {c: i for i, c in enumerate(letters)}
    return np.array([where[w[0]] for w in words], dtype=int)
