"""The shipped entities (cities with a country and a continent), the prompts that query them, and the answers.

`cities.tsv` is derived from Debian's tzdata and iso-codes by `scripts/build_cities.py` (sources, rules and
licences in its header and in `cities.md`). Each prompt names the city after a fixed prefix (position 0 of a
SmolLM2 context is an attention sink whatever its token, so the entity never sits there) and ends where the
attribute's value comes next. Answers are read by constrained greedy decoding over the attribute's values
(`Answers`), so values that share their first tokens (United States / United Kingdom) are still told apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from tasks.prompts import Tokenize, pad_right

ATTRIBUTES = ("country", "continent")
# Every template names the city after the same prefix, so a city's activation at its last token is the same in
# all its prompts (the prefix and the city are all a causal model has read there): the patch source does not
# depend on which attribute is queried, as in RAVEL.
PREFIX = "The city of {city}"
TEMPLATES = {
    "country": (PREFIX + " is in the country of", PREFIX + " is located in the country of"),
    "continent": (PREFIX + " is on the continent of", PREFIX + " is located on the continent of"),
}


@dataclass(frozen=True)
class Cities:
    """The entity table: `city`, `country`, `continent` each `[n]`, in file order (sorted by zone)."""

    city: tuple[str, ...]
    country: tuple[str, ...]
    continent: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.city)

    def values(self, attribute: str) -> tuple[str, ...]:
        """An attribute's distinct values, sorted: the answers a prompt is read against."""
        return tuple(sorted(set(getattr(self, attribute))))

    def labels(self, attribute: str) -> np.ndarray:
        """`[n]` each city's value of `attribute` as an index into `values(attribute)`."""
        where = {v: i for i, v in enumerate(self.values(attribute))}
        return np.array([where[v] for v in getattr(self, attribute)], dtype=int)


def load_cities(text: str | None = None) -> Cities:
    """The shipped `cities.tsv` (or `text` in its format): `#` header lines, a column line, one city per row."""
    if text is None:
        text = resources.files("tasks.disentanglement").joinpath("cities.tsv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    cols = lines[0].split("\t")
    rows = [dict(zip(cols, line.split("\t"), strict=True)) for line in lines[1:]]
    return Cities(tuple(r["city"] for r in rows), tuple(r["country"] for r in rows),
                  tuple(r["continent"] for r in rows))


@dataclass
class Prompts:
    """One attribute's prompts, one per (city, template): right-padded tokens and where the city ends."""

    tokens: torch.Tensor  # `[N, T]`
    length: torch.Tensor  # `[N]`
    entity: np.ndarray  # `[N]` the city (index into `Cities`)
    template: np.ndarray  # `[N]` index into the attribute's templates
    position: torch.Tensor  # `[N]` the city's last token: where features are read and patched

    def row(self) -> dict[tuple[int, int], int]:
        """(entity, template) -> row."""
        return {(int(e), int(t)): i for i, (e, t) in enumerate(zip(self.entity, self.template, strict=True))}


def build_prompts(templates: tuple[str, ...], cities: list[str], entity: np.ndarray, tokenize: Tokenize,
                  bos: int | None, pad: int) -> Prompts:
    """Prompts for the cities `entity` (indices; `cities[i]` their names) under every template. The city's tokens
    are those of the prefix-and-city text (checked: the template's remainder must not merge into them)."""
    rows, ents, temps, pos = [], [], [], []
    for t, template in enumerate(templates):
        head, tail = template.split("{city}")
        for e in entity:
            named = tokenize(head + cities[e])
            ids = tokenize(head + cities[e] + tail)
            if ids[:len(named)] != named:
                continue  # the tokenizer merges the city into the template's text: no clean city position
            start = [bos] if bos is not None else []
            rows.append(start + ids)
            pos.append(len(start) + len(named) - 1)
            ents.append(int(e))
            temps.append(t)
    tokens, length = pad_right(rows, pad)
    return Prompts(tokens, length, np.array(ents, dtype=int), np.array(temps, dtype=int), torch.tensor(pos))


class Answers:
    """An attribute's values as token sequences, read by constrained greedy decoding: at each step the best next
    token among those that continue some value; done once one value is left. Where a value is complete and
    longer ones continue it (Niger / Nigeria), the answer stops there unless the model's greedy next token over
    the whole vocabulary continues it."""

    def __init__(self, values: tuple[str, ...], tokenize: Tokenize) -> None:
        self.values = values
        self.seqs = [tuple(tokenize(" " + v)) for v in values]
        self._below: dict[tuple[int, ...], list[int]] = {}  # prefix -> the values that start with it
        for i, s in enumerate(self.seqs):
            for n in range(len(s) + 1):
                self._below.setdefault(s[:n], []).append(i)

    def only(self, prefix: tuple[int, ...]) -> int | None:
        below = self._below[prefix]
        return below[0] if len(below) == 1 else None

    def step(self, prefix: tuple[int, ...], logits: torch.Tensor) -> tuple[tuple[int, ...], int | None]:
        """One decoding step from `prefix` with next-token `logits` `[V]`: (the longer prefix, None) or (prefix,
        the value the answer ends with)."""
        below = self._below[prefix]
        nexts = sorted({self.seqs[i][len(prefix)] for i in below if len(self.seqs[i]) > len(prefix)})
        ended = next((i for i in below if len(self.seqs[i]) == len(prefix)), None)
        best = nexts[int(logits[nexts].argmax())]
        if ended is not None and int(logits.argmax()) not in nexts:
            return prefix, ended
        longer = prefix + (best,)
        return longer, self.only(longer)

    def starts(self, value: int, prefix: tuple[int, ...]) -> bool:
        """Whether the value's tokens start with `prefix`."""
        return self.seqs[value][:len(prefix)] == prefix

    def first_tokens_shared(self) -> int:
        """How many values share their first token with another (they need a second decoding step)."""
        first = [s[0] for s in self.seqs]
        return sum(first.count(f) > 1 for f in first)
