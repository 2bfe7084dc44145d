"""Seed streams: independent generators derived from one run seed, so adding a draw never shifts another."""

from __future__ import annotations

import hashlib
import re

import numpy as np


def stream(seed: int, tag: str) -> int:
    """A generator seed for `tag` derived from `seed`, unrelated to `seed` itself or to other tags."""
    return int.from_bytes(hashlib.sha256(f"{tag}:{seed}".encode()).digest()[:8], "little") >> 1


def rng(seed: int, tag: str) -> np.random.Generator:
    return np.random.default_rng(stream(seed, tag))


SEED_SUFFIX = re.compile(r"~s(-?\d+)$")


def seed_label(label: str, seed: int | None) -> str:
    """A method label for one extra seed of a multi-seed run (`sae-relu~s1`); the base seed keeps the plain label."""
    return label if seed is None else f"{label}~s{seed}"


def split_seed(label: str) -> tuple[str, int | None]:
    """`sae-relu~s1` -> ("sae-relu", 1); a plain label -> (label, None)."""
    m = SEED_SUFFIX.search(label)
    return (label[: m.start()], int(m.group(1))) if m else (label, None)
