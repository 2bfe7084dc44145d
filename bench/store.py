"""On-disk activation store: harvested once per key, reused by every method, task and run.

Layout of one store (`<cache>/activations/<key>/`)::

    manifest.json                 model, hook, corpus fingerprint, context length, dtype, exclusion rule,
                                  and per split the finished shards with their SHA-256 checksums
    train/acts_00000.npy          float32 [n_ctx, ctx_len, d_model]   (memory-mapped when read)
    train/tokens_00000.npy        int32   [n_ctx, ctx_len]            (token ids: autointerp needs contexts back)
    train/keep_00000.npy          bool    [n_ctx, ctx_len]            (False where the exclusion rule drops a token)
    train/doc_00000.npy           int32   [n_ctx]                     (index into the split's document list)
    eval/...

Shards are written atomically and recorded in the manifest only once complete, so an interrupted harvest
resumes at the first missing shard.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from bench.errors import BenchError
from bench.io import atomic_write_json, sha256_file

MANIFEST = "manifest.json"
STORE_VERSION = 1
ARRAYS = ("acts", "tokens", "keep", "doc")
CLEAR = "clear it with `python -m bench clean-cache --activations` and rerun"


@dataclass(frozen=True)
class ExclusionRule:
    """Which positions are left out of training, of every reconstruction metric and of splicing.

    On SmolLM2 the first position of every context and a few other tokens are attention sinks whose residual
    norm is ~150x the median; left in, they carry almost all of the variance and make FVU and PCA meaningless.
    """

    drop_first: bool = True
    drop_special: bool = True
    norm_factor: float = 10.0  # drop tokens whose norm exceeds this multiple of the reference median norm

    def describe(self) -> str:
        parts = []
        if self.drop_first:
            parts.append("position 0")
        if self.drop_special:
            parts.append("special tokens")
        if self.norm_factor > 0:
            parts.append(f"tokens with norm > {self.norm_factor:g} x median norm")
        return "excluded: " + (", ".join(parts) if parts else "nothing")

    def base_mask(self, tokens: torch.Tensor, special_ids: torch.Tensor) -> torch.Tensor:
        """Mask from position and token id alone. tokens: `[B, T]` -> bool `[B, T]`."""
        keep = torch.ones_like(tokens, dtype=torch.bool)
        if self.drop_first:
            keep[:, 0] = False
        if self.drop_special and special_ids.numel():
            keep &= ~torch.isin(tokens, special_ids.to(tokens.device))
        return keep

    def mask(
        self, tokens: torch.Tensor, acts: torch.Tensor, special_ids: torch.Tensor, reference_norm: float | None
    ) -> torch.Tensor:
        """tokens `[B, T]`, acts `[B, T, d]` -> bool keep mask `[B, T]`."""
        keep = self.base_mask(tokens, special_ids)
        if self.norm_factor > 0 and reference_norm is not None:
            keep &= acts.norm(dim=-1) <= self.norm_factor * reference_norm
        return keep

    @staticmethod
    def reference_norm(acts: torch.Tensor, base_keep: torch.Tensor) -> float:
        """Median token norm over positions the base mask keeps; acts `[B, T, d]`."""
        return float(acts.norm(dim=-1)[base_keep].median())


def subsample(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted seeded random indices: `size` of range(n) without replacement (the same rows for every split type)."""
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


class ActivationSplit:
    """Read access to one split (train or eval) of a finished store."""

    def __init__(self, root: Path, name: str, info: dict[str, Any], d_model: int, ctx_len: int,
                 hook: str | None = None) -> None:
        self.root = Path(root)
        self.name = name
        self.hook = hook
        self.shards: list[dict[str, Any]] = info["shards"]
        self.documents: list[tuple[str, str]] = [tuple(d) for d in info.get("documents", [])]  # (id, genre)
        self.d_model = d_model
        self.ctx_len = ctx_len

    @property
    def n_contexts(self) -> int:
        return sum(s["n_contexts"] for s in self.shards)

    @property
    def n_tokens(self) -> int:
        return self.n_contexts * self.ctx_len

    @property
    def n_kept(self) -> int:
        return sum(s["n_kept"] for s in self.shards)

    @property
    def excluded_fraction(self) -> float:
        return 1.0 - self.n_kept / max(self.n_tokens, 1)

    def _load(self, shard: int, array: str, mmap: bool = True) -> np.ndarray:
        return np.load(self.root / self.name / f"{array}_{shard:05d}.npy", mmap_mode="r" if mmap else None)

    def tokens(self) -> np.ndarray:
        """int32 `[n_contexts, ctx_len]`."""
        return np.concatenate([self._load(i, "tokens", mmap=False) for i in range(len(self.shards))])

    def keep(self) -> np.ndarray:
        """bool `[n_contexts, ctx_len]`."""
        return np.concatenate([self._load(i, "keep", mmap=False) for i in range(len(self.shards))])

    def doc(self) -> np.ndarray:
        """int32 `[n_contexts]`: each context's index into `documents`."""
        return np.concatenate([self._load(i, "doc", mmap=False) for i in range(len(self.shards))])

    def context_activations(self, start: int, stop: int) -> torch.Tensor:
        """float32 `[stop - start, ctx_len, d_model]` for contexts start..stop (crossing shards as needed)."""
        out, offset = [], 0
        for i, s in enumerate(self.shards):
            lo, hi = max(start - offset, 0), min(stop - offset, s["n_contexts"])
            if lo < hi:
                out.append(np.asarray(self._load(i, "acts")[lo:hi]))
            offset += s["n_contexts"]
        return torch.from_numpy(np.concatenate(out)) if out else torch.empty(0, self.ctx_len, self.d_model)

    def _kept_rows(self, shard: int) -> np.ndarray:
        """float32 `[n_kept_in_shard, d_model]`, read into memory."""
        acts = self._load(shard, "acts")
        keep = self._load(shard, "keep", mmap=False)
        return np.asarray(acts.reshape(-1, self.d_model)[keep.reshape(-1)])

    def kept_activations(self, max_tokens: int | None = None, seed: int = 0) -> torch.Tensor:
        """All kept tokens `[n, d_model]`, or a seeded random subset of `max_tokens` of them (in store order)."""
        if max_tokens is None or max_tokens >= self.n_kept:
            return torch.from_numpy(np.concatenate([self._kept_rows(i) for i in range(len(self.shards))]))
        # Only the sampled rows are read (a 20 k sample of a 262 k-token split: not the whole 600 MB).
        pick, parts, offset = subsample(self.n_kept, max_tokens, seed), [], 0
        for i, s in enumerate(self.shards):
            local = pick[(pick >= offset) & (pick < offset + s["n_kept"])] - offset
            if len(local):
                flat = np.flatnonzero(self._load(i, "keep", mmap=False).reshape(-1))
                parts.append(np.asarray(self._load(i, "acts").reshape(-1, self.d_model)[flat[local]]))
            offset += s["n_kept"]
        return torch.from_numpy(np.concatenate(parts))

    def kept_context(self, max_tokens: int | None = None, seed: int = 0) -> np.ndarray:
        """int64 `[n]`: the context of each row `kept_activations(max_tokens, seed)` returns, in the same order (the
        same seeded subsample); `doc()[kept_context(...)]` gives each row's document."""
        per_shard, offset = [], 0
        for i, s in enumerate(self.shards):
            keep = self._load(i, "keep", mmap=False)
            per_shard.append(np.repeat(np.arange(offset, offset + len(keep), dtype=np.int64), keep.sum(axis=1)))
            offset += s["n_contexts"]
        rows = np.concatenate(per_shard) if per_shard else np.empty(0, dtype=np.int64)
        if max_tokens is not None and max_tokens < len(rows):
            rows = rows[subsample(len(rows), max_tokens, seed)]
        return rows

    def batches(self, batch_size: int, seed: int = 0, epochs: float = 1.0) -> Iterator[torch.Tensor]:
        """Stream shuffled batches `[batch_size, d_model]` of kept tokens, one shard in memory at a time.

        Shard order and rows within a shard are shuffled per epoch with `seed`; a fractional `epochs` stops
        after that fraction of the tokens. The last partial batch of the whole pass is dropped.
        """
        rng = np.random.default_rng(seed)
        budget = int(self.n_kept * epochs) // batch_size
        carry = np.empty((0, self.d_model), dtype=np.float32)
        produced = 0
        while produced < budget:
            for shard in rng.permutation(len(self.shards)):
                rows = self._kept_rows(int(shard))
                rows = np.concatenate([carry, rows[rng.permutation(len(rows))]])
                n_full = len(rows) // batch_size
                for b in range(n_full):
                    if produced >= budget:
                        return
                    yield torch.from_numpy(rows[b * batch_size : (b + 1) * batch_size])
                    produced += 1
                carry = rows[n_full * batch_size :]
            if budget and produced == 0:
                raise BenchError(f"{self.root}: fewer kept tokens than one batch of {batch_size}; harvest more tokens")


class ActivationStore:
    """A finished, verified store. Open with `ActivationStore.open(path)`."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.d_model: int = manifest["d_model"]
        self.ctx_len: int = manifest["ctx_len"]
        self.hook: str = manifest["hook"]
        self.exclusion = ExclusionRule(**manifest["exclusion"]["rule"])
        self.reference_norm: float = manifest["exclusion"]["reference_norm"]
        self.train = ActivationSplit(self.root, "train", manifest["splits"]["train"], self.d_model, self.ctx_len,
                                     self.hook)
        self.eval = ActivationSplit(self.root, "eval", manifest["splits"]["eval"], self.d_model, self.ctx_len,
                                    self.hook)

    @classmethod
    def open(cls, root: Path, verify: bool = True) -> "ActivationStore":
        root = Path(root)
        manifest = read_manifest(root)
        if manifest is None or not manifest.get("complete"):
            raise BenchError(f"{root}: activation store is missing or unfinished; rerun `python -m bench run` to harvest")
        if verify:
            verify_store(root, manifest)
        try:
            return cls(root, manifest)
        except (KeyError, TypeError, ValueError) as e:  # a field missing or of the wrong type
            raise BenchError(f"{root / MANIFEST} is corrupt ({type(e).__name__}: {e}); {CLEAR}") from None

    def exclusion_record(self) -> dict[str, Any]:
        """What every result records about excluded tokens."""
        return {
            "rule": self.exclusion.describe(),
            "params": asdict(self.exclusion),
            "reference_norm": self.reference_norm,
            "excluded_fraction_train": self.train.excluded_fraction,
            "excluded_fraction_eval": self.eval.excluded_fraction,
        }


def read_manifest(root: Path) -> dict[str, Any] | None:
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:  # unreadable (a directory, no permission), not JSON
        raise BenchError(f"{path} is corrupt ({type(e).__name__}); {CLEAR}") from None
    if not isinstance(manifest, dict):
        raise BenchError(f"{path} is corrupt (not a JSON object); {CLEAR}")
    if manifest.get("version") != STORE_VERSION:
        raise BenchError(f"{root} was written by another store version; {CLEAR}")
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(Path(root) / MANIFEST, manifest)


def shard_files(root: Path, split: str, index: int) -> dict[str, Path]:
    return {a: Path(root) / split / f"{a}_{index:05d}.npy" for a in ARRAYS}


def verify_store(root: Path, manifest: dict[str, Any]) -> None:
    """Check every shard against its recorded checksum; a mismatch names the command that clears it."""
    try:
        expected = [(path, shard["sha256"][array]) for split, info in manifest["splits"].items()
                    for i, shard in enumerate(info["shards"]) for array, path in shard_files(root, split, i).items()]
    except (KeyError, TypeError, AttributeError) as e:  # a field missing or of the wrong type
        raise BenchError(f"{Path(root) / MANIFEST} is corrupt ({type(e).__name__}: {e}); {CLEAR}") from None
    for path, digest in expected:
        try:
            ok = sha256_file(path) == digest  # a truncated or edited shard fails here
        except OSError as e:  # missing, a directory, unreadable
            raise BenchError(f"corrupt activation shard {path} ({e.strerror or type(e).__name__}); {CLEAR}") from None
        if not ok:
            raise BenchError(f"corrupt activation shard {path} (checksum mismatch); {CLEAR}")


class ArraySplit:
    """Activations held in memory `[n, d_model]`, behind the same read interface as a store split.

    Synthetic data and tests fit methods through it exactly as real activations are fitted.
    """

    def __init__(self, x: torch.Tensor, hook: str | None = None) -> None:
        self.x = x.float().contiguous()
        self.d_model = int(x.shape[1])
        self.hook = hook

    @property
    def n_kept(self) -> int:
        return int(self.x.shape[0])

    def kept_activations(self, max_tokens: int | None = None, seed: int = 0) -> torch.Tensor:
        if max_tokens is None or max_tokens >= self.n_kept:
            return self.x
        return self.x[torch.from_numpy(subsample(self.n_kept, max_tokens, seed))]

    def batches(self, batch_size: int, seed: int = 0, epochs: float = 1.0) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng(seed)
        budget = int(self.n_kept * epochs) // batch_size
        if budget == 0 and epochs > 0:
            raise BenchError(f"fewer activations ({self.n_kept}) than one batch of {batch_size}")
        produced = 0
        while produced < budget:
            order = torch.from_numpy(rng.permutation(self.n_kept))
            for b in range(self.n_kept // batch_size):
                if produced >= budget:
                    return
                yield self.x[order[b * batch_size : (b + 1) * batch_size]]
                produced += 1
