"""Seed streams: independent generators derived from one run seed, so adding a draw never shifts another."""

from __future__ import annotations

import hashlib

import numpy as np


def stream(seed: int, tag: str) -> int:
    """A generator seed for `tag` derived from `seed`, unrelated to `seed` itself or to other tags."""
    return int.from_bytes(hashlib.sha256(f"{tag}:{seed}".encode()).digest()[:8], "little") >> 1


def rng(seed: int, tag: str) -> np.random.Generator:
    return np.random.default_rng(stream(seed, tag))
