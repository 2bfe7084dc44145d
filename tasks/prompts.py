"""Pieces shared by the tasks that build their own prompts (IOI, concept erasure): single-token word lists checked
on the subject model's tokenizer, and right-padded token batches."""

from __future__ import annotations

from typing import Callable

import torch

Tokenize = Callable[[str], list[int]]


def single_tokens(words: tuple[str, ...], tokenize: Tokenize) -> dict[str, int]:
    """The words that are one token after a space, with that token's id (ids distinct)."""
    out: dict[str, int] = {}
    for w in words:
        ids = tokenize(" " + w)
        if len(ids) == 1 and ids[0] not in out.values():
            out[w] = ids[0]
    return out


def pad_right(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows -> (`[N, T]` right-padded ids, `[N]` lengths). A causal model's prediction at a row's last real
    token never sees the padding after it."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows]), torch.tensor([len(r) for r in rows])


def real_positions(length: torch.Tensor, width: int) -> torch.Tensor:
    """`[N]` lengths -> bool `[N, T]`, True on real tokens."""
    return torch.arange(width)[None, :] < length[:, None]


def special_ids(model) -> tuple[int | None, int]:
    """(BOS id if the model's contexts start with one, else None; a pad id)."""
    tok = model.tokenizer
    bos = tok.bos_token_id if model.entry.prepend_bos else None
    return bos, next((t for t in (tok.pad_token_id, tok.eos_token_id) if t is not None), 0)
