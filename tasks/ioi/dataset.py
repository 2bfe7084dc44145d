"""Indirect-object-identification prompts, clean and counterfactual, aligned token by token.

A clean prompt names two people, the indirect object A (IO) and the subject B (S), then has the subject give
something, and stops where the model should name A:

    ABBA  "When Mary and John went to the store, John gave a drink to"     -> " Mary"
    BABA  "When John and Mary went to the store, John gave a drink to"     -> " Mary"

Its counterfactual replaces A by a third name C and keeps everything else, so the two differ in exactly one token.
Names, places and objects are kept only if the subject model's tokenizer makes each a single token after a space:
checked on the tokenizer at hand, never assumed. Every prompt records where A, S (twice) and the last token are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.errors import BenchError
from tasks.prompts import Tokenize, pad_right, real_positions, single_tokens

# [A] is the indirect object, [B] the subject; ABBA as written, BABA swaps the first two names.
TEMPLATES = (
    "When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to",
    "After [A] and [B] arrived at the [PLACE], [B] handed a [OBJECT] to",
    "While [A] and [B] were working at the [PLACE], [B] passed a [OBJECT] to",
    "Then [A] and [B] walked into the [PLACE], and [B] offered a [OBJECT] to",
    "Yesterday [A] and [B] had lunch at the [PLACE]. Later [B] sent a [OBJECT] to",
)
NAMES = (
    "Mary", "John", "Alice", "Bob", "Tom", "James", "Sarah", "Emma", "David", "Michael", "Anna", "Peter", "Paul",
    "Kate", "Lucy", "Jack", "Daniel", "Laura", "Robert", "Lisa", "Mark", "Susan", "Henry", "Grace", "George",
    "Rachel", "Adam", "Helen", "Thomas", "Jane", "William", "Amy", "Richard", "Emily", "Charles", "Sam", "Ben",
    "Max", "Rose", "Ruth", "Eric", "Frank", "Harry", "Kevin", "Mike", "Nick", "Ryan", "Steve", "Anne", "Claire",
    "Julia", "Linda", "Nancy", "Olivia", "Sara", "Joseph", "Andrew", "Jessica", "Jennifer", "Patrick",
)
PLACES = ("store", "park", "school", "office", "beach", "garden", "station", "hospital", "restaurant", "library",
          "market", "house", "church", "museum", "hotel", "farm")
OBJECTS = ("drink", "book", "ring", "letter", "gift", "cake", "ball", "key", "bag", "flower", "card", "hat",
           "computer", "snack", "necklace", "coin")

@dataclass(frozen=True)
class IOIDataset:
    """N prompt pairs, right-padded to T tokens. Positions index into the padded rows."""

    clean: torch.Tensor  # `[N, T]` token ids
    counterfactual: torch.Tensor  # `[N, T]`, equal to `clean` except at `pos_io`
    length: torch.Tensor  # `[N]` real tokens per row; the prediction is read at `length - 1`
    io: torch.Tensor  # `[N]` token id of A (the clean answer)
    s: torch.Tensor  # `[N]` token id of B
    c: torch.Tensor  # `[N]` token id of C (the counterfactual's answer)
    pos_io: torch.Tensor  # `[N]`
    pos_s1: torch.Tensor  # `[N]`
    pos_s2: torch.Tensor  # `[N]`
    order: tuple[str, ...]  # "ABBA" or "BABA" per prompt
    template: tuple[int, ...]
    texts: tuple[str, ...]  # clean prompts
    names: tuple[str, ...]  # the single-token names the prompts were drawn from

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def last(self) -> torch.Tensor:
        return self.length - 1

    def real(self) -> torch.Tensor:
        """bool `[N, T]`: True on real tokens, False on padding."""
        return real_positions(self.length, self.clean.shape[1])


def fill(template: str, order: str, a: str, b: str, place: str, obj: str, later: str | None = None) -> str:
    """The prompt text; `later` names the subject of the second clause instead of b (default b, the IOI prompt)."""
    first, second = (a, b) if order == "ABBA" else (b, a)
    # The first clause names both people; the rest of the template names only the subject.
    text = template.replace("[A]", "\0", 1).replace("[B]", second, 1).replace("\0", first)
    return text.replace("[B]", b if later is None else later).replace("[PLACE]", place).replace("[OBJECT]", obj)


def vocabulary(tokenize: Tokenize, who: str) -> tuple[dict[str, int], list[str], list[str]]:
    """The names (with token ids), places and objects (sorted) this tokenizer keeps as single tokens."""
    names = single_tokens(NAMES, tokenize)
    places, objects = sorted(single_tokens(PLACES, tokenize)), sorted(single_tokens(OBJECTS, tokenize))
    if len(names) < 3 or not places or not objects:
        raise BenchError(f"{who}: this tokenizer makes only {len(names)} of {len(NAMES)} names, {len(places)} "
                         f"places and {len(objects)} objects single tokens; the prompts need >= 3, 1 and 1")
    return names, places, objects


def make_dataset(n_prompts: int, tokenize: Tokenize, seed: int, bos: int | None = None, pad: int = 0,
                 templates: tuple[str, ...] = TEMPLATES) -> IOIDataset:
    """`n_prompts` pairs, half ABBA and half BABA (n_prompts must be even), templates cycled, names drawn without
    repetition inside a pair. Raises a one-line BenchError when the tokenizer leaves too few single-token words."""
    if n_prompts < 2 or n_prompts % 2:
        raise BenchError(f"ioi_patching: n_prompts must be an even number >= 2 (ABBA/BABA balance), got {n_prompts}")
    names, places, objects = vocabulary(tokenize, "ioi_patching")
    rng = np.random.default_rng(seed)
    name_list = sorted(names)
    rows: list[dict] = []
    attempts = 0
    while len(rows) < n_prompts:
        attempts += 1
        if attempts > 20 * n_prompts:
            raise BenchError("ioi_patching: the tokenizer merges names with their neighbours in every template; "
                             "use a model whose tokenizer keeps ' Name' a single token")
        i = len(rows)
        order = "ABBA" if i % 2 == 0 else "BABA"
        t = (i // 2) % len(templates)
        a, b, c = (name_list[j] for j in rng.choice(len(name_list), 3, replace=False))
        place, obj = places[rng.integers(len(places))], objects[rng.integers(len(objects))]
        text = fill(templates[t], order, a, b, place, obj)
        row = _align(text, fill(templates[t], order, c, b, place, obj), names[a], names[b], names[c], tokenize, bos)
        if row is not None:
            rows.append(dict(row, order=order, template=t, text=text, io=names[a], s=names[b], c=names[c]))
    clean, length = pad_right([r["clean"] for r in rows], pad)
    counterfactual, _ = pad_right([r["counterfactual"] for r in rows], pad)
    col = lambda key: torch.tensor([r[key] for r in rows])  # noqa: E731
    return IOIDataset(
        clean=clean, counterfactual=counterfactual, length=length,
        io=col("io"), s=col("s"), c=col("c"), pos_io=col("pos_io"), pos_s1=col("pos_s1"), pos_s2=col("pos_s2"),
        order=tuple(r["order"] for r in rows), template=tuple(r["template"] for r in rows),
        texts=tuple(r["text"] for r in rows), names=tuple(name_list),
    )


def _align(clean: str, counterfactual: str, io: int, s: int, c: int, tokenize: Tokenize, bos: int | None) -> dict | None:
    """Token both prompts and find the names; None when the tokenizer did not keep them as expected."""
    prefix = [bos] if bos is not None else []
    x, y = prefix + tokenize(clean), prefix + tokenize(counterfactual)
    if len(x) != len(y):
        return None
    pos_io = [i for i, t in enumerate(x) if t == io]
    pos_s = [i for i, t in enumerate(x) if t == s]
    differ = [i for i, (p, q) in enumerate(zip(x, y, strict=True)) if p != q]
    if len(pos_io) != 1 or len(pos_s) != 2 or differ != pos_io or y[pos_io[0]] != c or c in x:
        return None
    return dict(clean=x, counterfactual=y, pos_io=pos_io[0], pos_s1=pos_s[0], pos_s2=pos_s[1])


@dataclass(frozen=True)
class RepeatedNames:
    """Token-level labels from the IOI templates: is the second clause's subject a name said before?

    Half the prompts are IOI prompts (the subject repeats, S2); the other half put a third, new name there. The
    position, template and words around it are the same on both sides, so only the repetition tells them apart.
    """

    tokens: torch.Tensor  # `[N, T]` right-padded
    length: torch.Tensor  # `[N]`
    position: torch.Tensor  # `[N]` the second clause's subject
    label: torch.Tensor  # `[N]` bool, True where that name was said before


def repeated_names(n: int, tokenize: Tokenize, seed: int, bos: int | None = None, pad: int = 0,
                   templates: tuple[str, ...] = TEMPLATES) -> RepeatedNames:
    """n prompts (even), labels alternating False/True, ABBA/BABA and templates cycled, names drawn at random."""
    if n < 2 or n % 2:
        raise BenchError(f"repeated-name prompts need an even number >= 2, got {n}")
    names, places, objects = vocabulary(tokenize, "repeated-name prompts")
    rng = np.random.default_rng(seed)
    name_list = sorted(names)
    prefix = [bos] if bos is not None else []
    rows, positions, labels = [], [], []
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 20 * n:
            raise BenchError("repeated-name prompts: the tokenizer merges names with their neighbours in every template")
        i = len(rows)
        repeated, order = bool(i % 2), "ABBA" if (i // 2) % 2 == 0 else "BABA"
        a, b, d = (name_list[j] for j in rng.choice(len(name_list), 3, replace=False))
        later = b if repeated else d
        text = fill(templates[(i // 4) % len(templates)], order, a, b, places[rng.integers(len(places))],
                    objects[rng.integers(len(objects))], later=later)
        ids = prefix + tokenize(text)
        where = [j for j, t in enumerate(ids) if t == names[later]]
        if len(where) != (2 if repeated else 1):
            continue  # the tokenizer merged a name with a neighbour
        rows.append(ids)
        positions.append(where[-1])
        labels.append(repeated)
    tokens, length = pad_right(rows, pad)
    return RepeatedNames(tokens, length, torch.tensor(positions), torch.tensor(labels))
