"""Harvest activations at one hook into an `ActivationStore`, once per key, resuming where it stopped."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.corpus import Contexts, Document, make_contexts, split_documents
from bench.errors import BenchError
from bench.io import atomic_write, fingerprint, sha256_file
from bench.models import SubjectModel
from bench.paths import cache_dir
from bench.store import STORE_VERSION, ActivationStore, ExclusionRule, read_manifest, shard_files, write_manifest

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class HarvestSpec:
    """Everything that determines a store's contents; its fingerprint is the store's key."""

    model: str
    model_fingerprint: str
    hook: str
    corpus_fingerprint: str
    ctx_len: int
    train_contexts: int
    eval_contexts: int
    exclusion: ExclusionRule
    shard_contexts: int = 256
    dtype: str = "float32"
    max_per_doc: int | None = None  # contexts cut from one document at most (None: no cap)
    cut: str = "round-robin"  # every document's first window, then every second, ...: contexts span the documents

    def key(self) -> str:
        return fingerprint(asdict(self), n=16)

    def path(self, root: Path | None = None) -> Path:
        safe_model = self.model.strip("/").replace("/", "_")
        return (root or cache_dir() / "activations") / safe_model / self.hook / self.key()


def _new_manifest(spec: HarvestSpec) -> dict:
    return {
        "version": STORE_VERSION,
        "key": spec.key(),
        "spec": asdict(spec),
        "model": spec.model,
        "hook": spec.hook,
        "ctx_len": spec.ctx_len,
        "dtype": spec.dtype,
        "d_model": None,
        "exclusion": {"rule": asdict(spec.exclusion), "reference_norm": None},
        "splits": {s: {"shards": [], "documents": []} for s in SPLITS},
        "complete": False,
    }


def _save_array(path: Path, array: np.ndarray) -> str:
    atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), array))
    return sha256_file(path)


def harvest(
    spec: HarvestSpec,
    docs: list[Document],
    model_loader: Callable[[], SubjectModel],
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    root: Path | None = None,
) -> ActivationStore:
    """Return the finished store for `spec`, harvesting (or finishing an interrupted harvest) if needed."""
    path = spec.path(root)
    manifest = read_manifest(path)
    if manifest is not None and manifest.get("complete"):
        return ActivationStore.open(path)
    if manifest is None or manifest.get("key") != spec.key():
        manifest = _new_manifest(spec)

    model = model_loader()
    model.validate_hook(spec.hook)
    manifest["d_model"] = model.d_model
    bos = model.tokenizer.bos_token_id if model.entry.prepend_bos else None
    splits = split_documents(docs)
    contexts = {
        s: make_contexts(splits[s], model.tokenize, spec.ctx_len, n, bos, spec.max_per_doc)
        for s, n in (("train", spec.train_contexts), ("eval", spec.eval_contexts))
    }
    for s in SPLITS:
        manifest["splits"][s]["documents"] = [[d.id, d.genre] for d in contexts[s].documents]

    total = sum(c.tokens.shape[0] for c in contexts.values()) * spec.ctx_len
    done = sum(sh["n_contexts"] for s in SPLITS for sh in manifest["splits"][s]["shards"]) * spec.ctx_len
    if progress:
        progress(done, total)
    rule = spec.exclusion
    for split in SPLITS:
        ctx: Contexts = contexts[split]
        shards = manifest["splits"][split]["shards"]
        for index in range(len(shards), -(-ctx.tokens.shape[0] // spec.shard_contexts)):
            lo = index * spec.shard_contexts
            hi = min(lo + spec.shard_contexts, ctx.tokens.shape[0])
            tokens = torch.from_numpy(ctx.tokens[lo:hi]).long()
            acts = torch.empty(hi - lo, spec.ctx_len, model.d_model)
            for b in range(0, hi - lo, batch_size):
                with model.float32():  # whatever --eval-dtype: SAEs train on float32 activations
                    out = model.activations(tokens[b : b + batch_size], spec.hook)
                if not torch.isfinite(out).all():
                    raise BenchError(
                        f"NaN or infinite activations at {spec.hook} of {spec.model}: check the model weights "
                        "(delete its converted copy in the cache) or pick another --layer"
                    )
                acts[b : b + out.shape[0]] = out.cpu()
                done += out.shape[0] * spec.ctx_len
                if progress:
                    progress(done, total)
            if manifest["exclusion"]["reference_norm"] is None:
                base = rule.base_mask(tokens, model.special_ids)
                manifest["exclusion"]["reference_norm"] = ExclusionRule.reference_norm(acts, base)
            keep = rule.mask(tokens, acts, model.special_ids, manifest["exclusion"]["reference_norm"])
            files = shard_files(path, split, index)
            arrays = {"acts": acts.numpy(), "tokens": ctx.tokens[lo:hi], "keep": keep.numpy(), "doc": ctx.doc[lo:hi]}
            shards.append({
                "n_contexts": hi - lo,
                "n_kept": int(keep.sum()),
                "sha256": {name: _save_array(files[name], arrays[name]) for name in files},
            })
            write_manifest(path, manifest)
    manifest["complete"] = True
    write_manifest(path, manifest)
    return ActivationStore.open(path, verify=False)
