"""The concepts to erase, each a small labelled dataset the task builds itself.

- `pronoun`: "<name> went to the store, and" with names of known gender; the model's behaviour is the next token,
  " he" or " she" (the paper's first version).
- `number`: "The <noun> in the garden" with a singular or plural noun; behaviour: " is" or " are".
- `genre`: 128-token contexts of the shipped corpus, fiction vs technical documents (no behaviour), spread over
  each genre's documents (seeded; one context per document while the genre has documents left).

Words are kept only if the subject model's tokenizer makes them single tokens (checked, not assumed), and the
train and test splits use disjoint names / nouns / documents, so a probe must read the concept, not the word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.errors import BenchError
from tasks.prompts import Tokenize, pad_right, real_positions, single_tokens
from tasks.sampling import split_genres, spread_contexts

MALE = ("John", "James", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas", "Charles", "Daniel",
        "Matthew", "Mark", "Paul", "Steven", "Andrew", "Kevin", "Brian", "George", "Edward", "Peter", "Henry", "Jack",
        "Frank", "Ryan", "Eric", "Adam", "Harry", "Sam", "Tom")
FEMALE = ("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Susan", "Jessica", "Sarah", "Karen", "Nancy", "Lisa",
          "Emily", "Emma", "Anna", "Laura", "Rachel", "Helen", "Kate", "Lucy", "Grace", "Alice", "Julia", "Rose",
          "Claire", "Amy", "Jane", "Ruth", "Olivia", "Sophie", "Diana")
PRONOUN_TEMPLATES = ("{w} went to the store, and", "After dinner {w} felt tired, so", "{w} opened the letter, and then",
                     "When the phone rang, {w} answered it and", "{w} finished the book, and")
# (singular, plural) pairs; a pair is used only if both forms are single tokens
NOUNS = (("dog", "dogs"), ("cat", "cats"), ("book", "books"), ("car", "cars"), ("house", "houses"), ("tree", "trees"),
         ("child", "children"), ("man", "men"), ("woman", "women"), ("bird", "birds"), ("key", "keys"),
         ("student", "students"), ("teacher", "teachers"), ("girl", "girls"), ("boy", "boys"), ("friend", "friends"),
         ("horse", "horses"), ("door", "doors"), ("letter", "letters"), ("flower", "flowers"), ("doctor", "doctors"),
         ("window", "windows"), ("apple", "apples"), ("river", "rivers"))
NUMBER_TEMPLATES = ("The {w} in the garden", "The {w} near the old house", "I think the {w}", "The {w} that we saw",
                    "Yesterday the {w}")
GENRES = ("fiction", "technical")


@dataclass(frozen=True)
class PromptSet:
    """Right-padded prompts with a binary label; the behaviour is the next token, `answers[label]`."""

    tokens: torch.Tensor  # `[N, T]`
    length: torch.Tensor  # `[N]`
    label: torch.Tensor  # `[N]` bool
    texts: tuple[str, ...]

    def real(self) -> torch.Tensor:
        return real_positions(self.length, self.tokens.shape[1])


@dataclass(frozen=True)
class PromptConcept:
    name: str
    train: PromptSet
    test: PromptSet
    answers: tuple[int, int]  # token ids of the answer for label False, label True
    classes: tuple[str, str]


def _words(pairs: list[tuple[str, str]], rng: np.random.Generator, frac: float) -> tuple[list, list]:
    order = rng.permutation(len(pairs))
    cut = max(1, round(frac * len(pairs)))
    return [pairs[i] for i in order[:cut]], [pairs[i] for i in order[cut:]]


def _prompts(words: list[tuple[str, bool]], templates: tuple[str, ...], n: int, tokenize: Tokenize,
             rng: np.random.Generator, bos: int | None, pad: int) -> PromptSet:
    """n prompts, half of each label, words drawn from `words` (word, label), templates cycled."""
    by_label = {lab: [w for w, lab2 in words if lab2 == lab] for lab in (False, True)}
    rows, labels, texts = [], [], []
    for i in range(n):
        label = bool(i % 2)
        word = by_label[label][rng.integers(len(by_label[label]))]
        text = templates[(i // 2) % len(templates)].format(w=word)
        rows.append(([bos] if bos is not None else []) + tokenize(text))
        labels.append(label)
        texts.append(text)
    tokens, length = pad_right(rows, pad)
    return PromptSet(tokens, length, torch.tensor(labels), tuple(texts))


def _concept(name: str, pairs: list[tuple[str, bool]], templates: tuple[str, ...], answers: tuple[str, str],
             classes: tuple[str, str], n_train: int, n_test: int, tokenize: Tokenize, seed: int, bos: int | None,
             pad: int) -> PromptConcept:
    if n_train % 2 or n_test % 2 or n_train < 4 or n_test < 2:
        raise BenchError(f"concept_erasure: {name} needs even n_train >= 4 and n_test >= 2 (balanced labels)")
    ids = [tokenize(" " + a) for a in answers]
    if any(len(i) != 1 for i in ids):
        raise BenchError(f"concept_erasure: this tokenizer splits the answers {answers} of concept {name!r}")
    rng = np.random.default_rng(seed)
    split = {lab: _words([p for p in pairs if p[1] == lab], rng, 2 / 3) for lab in (False, True)}
    if any(not s[0] or not s[1] for s in split.values()):
        raise BenchError(f"concept_erasure: too few single-token words for concept {name!r} on this tokenizer")
    train = _prompts(split[False][0] + split[True][0], templates, n_train, tokenize, rng, bos, pad)
    test = _prompts(split[False][1] + split[True][1], templates, n_test, tokenize, rng, bos, pad)
    return PromptConcept(name, train, test, (ids[0][0], ids[1][0]), classes)


def pronoun_concept(n_train: int, n_test: int, tokenize: Tokenize, seed: int, bos: int | None = None,
                    pad: int = 0) -> PromptConcept:
    """label True = female name; answers (" he", " she")."""
    male, female = single_tokens(MALE, tokenize), single_tokens(FEMALE, tokenize)
    pairs = [(w, False) for w in male if w not in female] + [(w, True) for w in female if w not in male]
    return _concept("pronoun", pairs, PRONOUN_TEMPLATES, ("he", "she"), ("male", "female"), n_train, n_test,
                    tokenize, seed, bos, pad)


def number_concept(n_train: int, n_test: int, tokenize: Tokenize, seed: int, bos: int | None = None,
                   pad: int = 0) -> PromptConcept:
    """label True = plural subject; answers (" is", " are")."""
    ok = [(s, p) for s, p in NOUNS if len(tokenize(" " + s)) == 1 and len(tokenize(" " + p)) == 1]
    pairs = [(s, False) for s, _ in ok] + [(p, True) for _, p in ok]
    return _concept("number", pairs, NUMBER_TEMPLATES, ("is", "are"), ("singular", "plural"), n_train, n_test,
                    tokenize, seed, bos, pad)


def genre_contexts(split, n_per_class: int, classes: tuple[str, str] = GENRES, seed: int = 0,
                   tag: str = "genre") -> tuple[np.ndarray, torch.Tensor]:
    """Up to n_per_class contexts of each genre from a store split, spread over that genre's documents (seeded):
    (context indices `[n]`, labels `[n]` bool, True = the second class)."""
    doc, genres = split.doc(), split_genres(split)
    genre = np.array([genres[d] for d in doc])
    picked, labels = [], []
    for label, g in enumerate(classes):
        idx = np.flatnonzero(genre == g)
        take = idx[spread_contexts(doc[idx], genres, n_per_class, seed, f"{tag}/{g}")]
        picked.extend(take.tolist())
        labels.extend([bool(label)] * len(take))
    return np.array(picked, dtype=int), torch.tensor(labels, dtype=torch.bool)
