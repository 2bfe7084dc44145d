"""Text: the shipped English corpus (or a user's own), split by document, cut into fixed-length token contexts.

The shipped corpus (`bench/data/corpus.jsonl.xz`, rebuilt by `scripts/build_corpus.py`, sources and licences in
`bench/data/SOURCES.md`) mixes genres (fiction, scripture, quotations, definitions, technical prose, jargon);
each document carries its genre label, a free real label for probing and erasure tasks.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from bench.errors import BenchError

DEFAULT_CORPUS = Path(__file__).parent / "data" / "corpus.jsonl.xz"


@dataclass(frozen=True)
class Document:
    id: str
    genre: str
    text: str
    title: str = ""
    source: str = ""


def _from_records(records: Iterable[dict], origin: str) -> list[Document]:
    docs = []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not isinstance(r.get("text"), str):
            raise BenchError(f"{origin}: record {i} has no string field 'text'")
        docs.append(Document(str(r.get("id", f"doc-{i:06d}")), str(r.get("genre", "unlabelled")), r["text"],
                             str(r.get("title", "")), str(r.get("source", origin))))
    return docs


def _read_jsonl(lines: Iterable[bytes], origin: str) -> list[Document]:
    """Records from the raw lines of a .jsonl file, decoded one by one so that an error names its line."""
    records = []
    n = 0
    try:
        for n, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BenchError(f"{origin}: line {n} is not UTF-8 text; --text takes UTF-8 .txt or .jsonl files "
                                 "(each line a JSON object with 'text')") from None
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    raise BenchError(f"{origin}: line {n} is not valid JSON; each line must be an object with 'text'") from None
    except (EOFError, lzma.LZMAError, gzip.BadGzipFile, zlib.error) as e:  # a damaged or truncated archive
        raise BenchError(f"{origin}: the compressed file is damaged after line {n} ({type(e).__name__}); "
                         "recompress it or pass the uncompressed .jsonl") from None
    return _from_records(records, origin)


def _read_txt(text: str, origin: str, words_per_doc: int = 1500) -> list[Document]:
    """Plain text: paragraphs (blank-line separated) grouped into documents of about `words_per_doc` words."""
    docs, block, count = [], [], 0
    for para in (p.strip() for p in text.split("\n\n")):
        if not para:
            continue
        block.append(para)
        count += len(para.split())
        if count >= words_per_doc:
            docs.append("\n\n".join(block))
            block, count = [], 0
    if block:
        docs.append("\n\n".join(block))
    stem = Path(origin).stem
    return [Document(f"{stem}-{i:05d}", "unlabelled", t, source=origin) for i, t in enumerate(docs)]


def load_corpus(text: str | None = None) -> list[Document]:
    """The shipped corpus, a user's .txt / .jsonl(.xz|.gz) file, or a locally cached Hugging Face dataset name."""
    if text is None:
        with lzma.open(DEFAULT_CORPUS, "rb") as f:
            return _read_jsonl(f, "shipped corpus")
    path = Path(text).expanduser()
    if path.exists():
        if path.suffix not in {".xz", ".gz", ".jsonl", ".txt"}:
            raise BenchError(f"--text {path}: use a .txt, .jsonl, .jsonl.xz or .jsonl.gz file")
        try:
            if path.suffix == ".txt":
                return _read_txt(path.read_text(encoding="utf-8", errors="replace"), str(path))
            opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
            with opener(path, "rb") as f:
                return _read_jsonl(f, str(path))
        except OSError as e:  # a directory named like a file, no permission
            raise BenchError(f"--text {path}: cannot read it ({e.strerror or e}); pass a readable file") from None
    if os.sep in text or text.endswith((".txt", ".jsonl")):
        raise BenchError(f"--text {text}: no such file")
    return _load_hf_dataset(text)


def _load_hf_dataset(name: str) -> list[Document]:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise BenchError(f"--text {name}: not a file; reading a Hugging Face dataset needs `pip install datasets`") from None
    try:
        ds = datasets.load_dataset(name, split="train")
    except OSError:  # not cached: offline, the hub is "unreachable" (ConnectionError) or the name is not found
        raise BenchError(
            f"--text {name}: not a file and not a Hugging Face dataset in the local cache; nothing is downloaded at run time"
        ) from None
    except ValueError as e:  # a malformed name, or no 'train' split
        raise BenchError(f"--text {name}: cannot read its 'train' split ({(str(e).splitlines() or [type(e).__name__])[0][:200]}); "
                         "pass a .txt or .jsonl file instead") from None
    return _from_records(({"id": f"{name}-{i}", **row} for i, row in enumerate(ds)), name)


def corpus_fingerprint(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.id.encode() + b"\0" + d.genre.encode() + b"\0" + d.text.encode() + b"\0")
    return h.hexdigest()[:16]


def _doc_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big")


def split_documents(docs: list[Document], eval_fraction: float = 0.1) -> dict[str, list[Document]]:
    """Deterministic split by document id (independent of the run's seed), each split in a fixed shuffled order."""
    threshold = int(eval_fraction * 2**64)
    order = sorted(docs, key=lambda d: _doc_hash("order:" + d.id))
    return {
        "train": [d for d in order if _doc_hash("split:" + d.id) >= threshold],
        "eval": [d for d in order if _doc_hash("split:" + d.id) < threshold],
    }


@dataclass
class Contexts:
    """tokens `[n, ctx_len]` int32; doc `[n]` int32 index into `documents`."""

    tokens: np.ndarray
    doc: np.ndarray
    documents: list[Document]


def make_contexts(
    docs: list[Document],
    tokenize: Callable[[str], list[int]],
    ctx_len: int,
    n_contexts: int,
    bos_id: int | None = None,
    max_per_doc: int | None = None,
) -> Contexts:
    """Cut documents into non-overlapping windows of `ctx_len` tokens, taken round-robin: every document's first
    window (in the given order), then every document's second, and so on, at most `max_per_doc` from one document.

    So n contexts span as many documents, and so genres, as the text allows: cutting each document whole before the
    next put a split's first contexts in one or two documents. With `bos_id`, every context starts with that token
    followed by `ctx_len - 1` text tokens. Rows come in that round-robin order.
    """
    body = ctx_len - (bos_id is not None)
    windows: list[list[list[int]]] = []
    for doc in docs:
        ids = tokenize(doc.text)
        n = len(ids) // body if max_per_doc is None else min(len(ids) // body, max_per_doc)
        windows.append([ids[w * body : (w + 1) * body] for w in range(n)])
    rows: list[list[int]] = []
    owner: list[int] = []
    depth = max((len(w) for w in windows), default=0)
    for w in range(depth):
        for d, doc_windows in enumerate(windows):
            if len(rows) == n_contexts:
                break
            if w < len(doc_windows):
                rows.append(([bos_id] if bos_id is not None else []) + doc_windows[w])
                owner.append(d)
    if len(rows) < n_contexts:
        raise BenchError(
            f"the text yields only {len(rows)} contexts of {ctx_len} tokens but {n_contexts} are needed: "
            "give more text (--text) or fewer tokens (--preset smoke)"
        )
    used = sorted(set(owner))
    remap = {d: i for i, d in enumerate(used)}
    return Contexts(np.asarray(rows, dtype=np.int32), np.asarray([remap[d] for d in owner], dtype=np.int32),
                    [docs[d] for d in used])
