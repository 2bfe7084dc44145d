#!/usr/bin/env python3
"""Rebuild decompbench's English text corpus (``bench/data/corpus.jsonl.xz``) from Debian packages.

The benchmark needs a few megabytes of real, varied English text with a genre label per
document, and it must build on an offline machine. Web corpora are not available there, but the
Debian archive is: every source below is a Debian package that is fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x`` (nothing is installed).

Sources, by genre (the ``source`` key written to each document in brackets):

* ``fiction``     -- Jane Austen's six novels [janeausten] from ``r-cran-janeaustenr`` (an R
  lazy-load database, read with the PyPI package ``rdata``) and *Moby Dick* [mobydick] from
  ``r-cran-tokenizers`` (same format).
* ``scripture``   -- the King James Bible [kjv] from ``bible-kjv-text`` (``usr/lib/bible.data``,
  a block-indexed file of ``compress(1)`` LZW streams, decoded here); verse references are
  stripped and each chapter becomes one paragraph.
* ``quotations``  -- the ``fortunes`` and ``fortunes-min`` cookie files [fortunes] (entries
  separated by ``%`` lines). The offensive collections live in other packages
  (``fortunes-off``) and are never downloaded; ``ascii-art`` and ``translate-me`` (Latin) are
  skipped.
* ``definitions`` -- WordNet 3.0 synset glosses [wordnet] from ``wordnet-base``, one synset per
  line as ``word, word2: gloss; "example"``.
* ``technical``   -- the Python 3.11 documentation [pydoc] (``python3.11-doc``, HTML reduced to
  prose with :mod:`html.parser`; code blocks, tables, signatures and navigation dropped) and the
  Linux 6.1 kernel documentation [linuxdoc] (``linux-doc-6.1``, reStructuredText reduced to prose;
  literal blocks, directives, tables and code-like paragraphs dropped).
* ``jargon``      -- the Jargon File 4.4.7 [jargon] from ``jargon-text`` (lexicon entries plus
  the prose chapters and appendices).

Every source is cut into documents of roughly 300-3000 words (chapters or runs of consecutive
chapters, ~100 consecutive fortunes, up to 200 consecutive glosses, a page or section of a page);
a fixed, evenly spaced subset of each source's documents is kept to meet a per-source word
budget. Text is NFC-normalised, control characters are removed, runs of spaces collapse, and
paragraphs are separated by ``"\\n\\n"``. Output: LZMA (xz) compressed JSON lines with the keys
``id, source, genre, title, text``, sorted by ``id``. Package versions are pinned, iteration
orders are fixed and the xz preset is fixed, so two runs give byte-identical output.

Usage::

    python scripts/build_corpus.py --out bench/data/corpus.jsonl.xz [--work /tmp/corpus-work]

Requirements: Debian/Ubuntu ``apt-get`` and ``dpkg-deb`` (run ``apt-get update`` once if
``apt-get download`` cannot find a package), Python >= 3.10, and ``pip install rdata`` (only
used for the two R data sources). Pass ``--allow-other-versions`` when a pinned package version
has left the mirror; the output will then differ from the committed file, and the versions
printed at the end must be copied into ``bench/data/SOURCES.md``.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import lzma
import math
import re
import shutil
import struct
import subprocess
import sys
import unicodedata
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

#: Debian package -> pinned version (the versions the committed corpus was built from).
PINNED_VERSIONS: dict[str, str] = {
    "r-cran-janeaustenr": "1.0.0-1",
    "r-cran-tokenizers": "0.3.0-1",
    "bible-kjv-text": "4.38",
    "fortunes": "1:1.99.1-7.3",
    "fortunes-min": "1:1.99.1-7.3",
    "wordnet-base": "1:3.0-37",
    "python3.11-doc": "3.11.2-6+deb12u8",
    "linux-doc-6.1": "6.1.176-1",
    "jargon-text": "4.4.7-4.1",
}

MIN_WORDS = 300  #: documents shorter than this are merged with a neighbour or dropped
MAX_WORDS = 3000  #: documents longer than this are split at paragraph boundaries
SPLIT_TARGET_WORDS = 2200  #: preferred size of the parts of a split document
XZ_PRESET = 9 | lzma.PRESET_EXTREME

# --------------------------------------------------------------------------------------------
# Documents and generic text helpers
# --------------------------------------------------------------------------------------------


@dataclass
class Doc:
    """One corpus document. ``licence`` is bookkeeping for the summary, never written out."""

    id: str
    source: str
    genre: str
    title: str
    text: str
    licence: str | None = field(default=None, compare=False)

    @property
    def words(self) -> int:
        return word_count(self.text)

    def record(self) -> dict[str, str]:
        return {"id": self.id, "source": self.source, "genre": self.genre, "title": self.title, "text": self.text}


@dataclass
class Unit:
    """A run of paragraphs with a human-readable label (a chapter, a page section, ...)."""

    label: str
    paragraphs: list[str]

    @property
    def words(self) -> int:
        return sum(word_count(p) for p in self.paragraphs)


_DROP_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\ufffc\ufffd]")
_SPACE_CHARS = re.compile("[\t\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_MULTI_SPACE = re.compile(r" {2,}")


def word_count(text: str) -> int:
    return len(text.split())


def clean_inline(text: str) -> str:
    """NFC-normalise, drop control/format characters and collapse spaces (keeps ``\\n``)."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _SPACE_CHARS.sub(" ", text)
    text = _DROP_CHARS.sub("", text)
    lines = [_MULTI_SPACE.sub(" ", line).strip() for line in text.split("\n")]
    return "\n".join(lines).strip()


def unwrap(lines: Iterable[str]) -> str:
    """Join the hard-wrapped lines of one paragraph into a single line."""
    return clean_inline(" ".join(line.strip() for line in lines)).replace("\n", " ")


def join_paragraphs(paragraphs: Iterable[str]) -> str:
    """Clean each paragraph and join them with blank lines; empty paragraphs vanish."""
    cleaned = (re.sub(r"\n{2,}", "\n", clean_inline(p)) for p in paragraphs)
    return "\n\n".join(p for p in cleaned if p)


def blocks_of(lines: Sequence[str]) -> list[list[str]]:
    """Group lines into blank-line separated blocks."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def letter_ratio(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


_ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}


def roman_to_int(token: str) -> int:
    if token.isdigit():
        return int(token)
    total = 0
    for ch, nxt in zip(token, token[1:] + " ", strict=True):
        value = _ROMAN[ch]
        total += -value if nxt != " " and _ROMAN[nxt] > value else value
    return total


def join_labels(first: str, last: str) -> str:
    """``"Psalms 117", "Psalms 118"`` -> ``"Psalms 117-118"``; otherwise ``"first - last"``."""
    if first == last:
        return first
    head_a, _, tail_a = first.rpartition(" ")
    head_b, _, tail_b = last.rpartition(" ")
    if head_a and head_a == head_b and tail_a.isdigit() and tail_b.isdigit():
        return f"{head_a} {tail_a}\u2013{tail_b}"
    return f"{first} \u2013 {last}"


def split_sentences(paragraph: str, max_words: int) -> list[str]:
    """Cut an over-long paragraph at sentence ends into pieces of at most ~max_words."""
    pieces: list[str] = []
    current: list[str] = []
    count = 0
    for sentence in re.split(r"(?<=[.!?;:])\s+", paragraph):
        n = word_count(sentence)
        if current and count + n > max_words:
            pieces.append(" ".join(current))
            current, count = [], 0
        current.append(sentence)
        count += n
    if current:
        pieces.append(" ".join(current))
    return pieces


def split_unit(unit: Unit, max_words: int = MAX_WORDS, target: int = SPLIT_TARGET_WORDS) -> list[Unit]:
    """Split a unit longer than ``max_words`` into near-equal parts at paragraph boundaries."""
    total = unit.words
    if total <= max_words:
        return [unit]
    paragraphs: list[str] = []
    for p in unit.paragraphs:
        paragraphs.extend(split_sentences(p, target // 2) if word_count(p) > target // 2 else [p])
    n_parts = math.ceil(total / target)
    goal = total / n_parts
    parts: list[list[str]] = [[] for _ in range(n_parts)]
    seen = 0
    for p in paragraphs:
        n = word_count(p)
        parts[min(n_parts - 1, int((seen + n / 2) // goal))].append(p)
        seen += n
    parts = [p for p in parts if p]
    if len(parts) == 1:
        return [Unit(unit.label, parts[0])]
    return [Unit(f"{unit.label} (part {k} of {len(parts)})", p) for k, p in enumerate(parts, 1)]


def merge_short(units: Sequence[Unit], min_words: int = MIN_WORDS) -> list[Unit]:
    """Merge runs of consecutive units until each holds at least ``min_words`` words.

    A short remainder at the end is appended to the previous unit.
    """
    merged: list[Unit] = []
    pending: list[Unit] = []
    for unit in units:
        pending.append(unit)
        if sum(u.words for u in pending) >= min_words:
            merged.append(_combine(pending))
            pending = []
    if pending:
        if merged:
            merged[-1] = _combine([merged[-1], *pending])
        else:
            merged.append(_combine(pending))
    return merged


def _combine(units: Sequence[Unit]) -> Unit:
    label = join_labels(units[0].label, units[-1].label)
    return Unit(label, [p for u in units for p in u.paragraphs])


def pack_units(units: Sequence[Unit], max_words: int = SPLIT_TARGET_WORDS) -> list[Unit]:
    """Greedily pack consecutive units into groups of at most ``max_words`` words."""
    packed: list[Unit] = []
    group: list[Unit] = []
    count = 0
    for unit in units:
        for part in split_unit(unit, max_words=max_words, target=max_words):
            if group and count + part.words > max_words:
                packed.append(_combine(group))
                group, count = [], 0
            group.append(part)
            count += part.words
    if group:
        packed.append(_combine(group))
    return packed


def book_documents(units: Sequence[Unit], make_doc: Callable[[int, Unit], Doc]) -> list[Doc]:
    """Chapters -> documents: split long chapters, merge short ones, number them from 1."""
    split = [part for unit in units for part in split_unit(unit)]
    return [make_doc(k, unit) for k, unit in enumerate(merge_short(split), 1)]


def select_evenly(docs: Sequence[Doc], budget_words: int) -> list[Doc]:
    """Keep an evenly spaced subset of ``docs`` (in their given order) of about ``budget_words``.

    The subset is ``k`` documents at evenly spaced positions, with ``k`` the largest count whose
    selection stays within the budget.
    """
    if sum(d.words for d in docs) <= budget_words:
        return list(docs)
    n = len(docs)

    def pick(k: int) -> list[Doc]:
        return [docs[int((j + 0.5) * n / k)] for j in range(k)]

    def words(k: int) -> int:
        return sum(d.words for d in pick(k))

    k = max(1, round(n * budget_words / sum(d.words for d in docs)))
    while k > 1 and words(k) > budget_words:
        k -= 1
    while k < n and words(k + 1) <= budget_words:
        k += 1
    return pick(k)


# --------------------------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------------------------


def _deb_field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True, text=True).stdout.strip()


def _candidate_version(package: str) -> str:
    out = subprocess.run(["apt-cache", "policy", package], check=True, capture_output=True, text=True).stdout
    match = re.search(r"Candidate:\s*(\S+)", out)
    if not match or match.group(1) == "(none)":
        raise SystemExit(f"apt knows no candidate version of {package}; run `apt-get update` first")
    return match.group(1)


def fetch_package(package: str, work: Path, allow_other_versions: bool) -> tuple[Path, str]:
    """Download (if needed) and unpack one package; return (extraction root, version)."""
    deb_dir = work / "debs"
    deb_dir.mkdir(parents=True, exist_ok=True)
    version = PINNED_VERSIONS[package]
    deb = _find_deb(deb_dir, package, version)
    if deb is None:
        result = subprocess.run(
            ["apt-get", "download", f"{package}={version}"], cwd=deb_dir, capture_output=True, text=True
        )
        deb = _find_deb(deb_dir, package, version)
        if deb is None:
            if not allow_other_versions:
                raise SystemExit(
                    f"could not download {package}={version}:\n{result.stderr.strip()}\n"
                    "Run `apt-get update` and retry, or pass --allow-other-versions to build from the "
                    "current version (the output will then differ from the committed corpus)."
                )
            version = _candidate_version(package)
            print(f"warning: {package}: pinned version unavailable, using {version}", file=sys.stderr)
            subprocess.run(
                ["apt-get", "download", f"{package}={version}"], cwd=deb_dir, check=True, capture_output=True
            )
            deb = _find_deb(deb_dir, package, version)
            if deb is None:
                raise SystemExit(f"apt-get download {package}={version} produced no .deb")
    root = work / "extract" / f"{package}_{slug(version)}"
    if not root.is_dir():
        tmp = root.with_name(root.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
    return root, version


def _find_deb(deb_dir: Path, package: str, version: str) -> Path | None:
    for deb in sorted(deb_dir.glob(f"{package}_*.deb")):
        if _deb_field(deb, "Package") == package and _deb_field(deb, "Version") == version:
            return deb
    return None


# --------------------------------------------------------------------------------------------
# R lazy-load databases (janeaustenr, tokenizers)
# --------------------------------------------------------------------------------------------


def read_r_lazyload(data_dir: Path) -> dict[str, list[str]]:
    """Read every character vector of an R package's ``data/Rdata.{rdx,rdb}`` database.

    The ``.rdx`` index is gzip-compressed R serialisation whose ``variables`` entry maps each
    object name to (offset, length) in ``.rdb``; each ``.rdb`` entry is a 4-byte big-endian
    length followed by a zlib stream holding the serialised object.
    """
    try:
        import rdata
    except ImportError as exc:  # pragma: no cover - environment problem
        raise SystemExit("the Austen and Moby Dick sources need `pip install rdata`") from exc

    def parse(raw: bytes) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdata warns that the stream has no RDS header
            return rdata.conversion.convert(rdata.parser.parse_data(raw))

    index = parse((data_dir / "Rdata.rdx").read_bytes())
    assert isinstance(index, dict)
    blob = (data_dir / "Rdata.rdb").read_bytes()
    out: dict[str, list[str]] = {}
    for name, (offset, length) in sorted((str(k), v) for k, v in index["variables"].items()):
        entry = blob[int(offset) : int(offset) + int(length)]
        value = parse(zlib.decompress(entry[4:]))
        out[name] = [str(x) for x in value]
    return out


# --------------------------------------------------------------------------------------------
# fiction: Jane Austen, Moby Dick
# --------------------------------------------------------------------------------------------

AUSTEN_TITLES = {
    "emma": "Emma",
    "mansfieldpark": "Mansfield Park",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
    "prideprejudice": "Pride and Prejudice",
    "sensesensibility": "Sense and Sensibility",
}
_CHAPTER_RE = re.compile(r"^\s*chapter\s+([0-9]+|[IVXLC]+)\.?\s*$", re.IGNORECASE)
_VOLUME_RE = re.compile(r"^\s*volume\s+([0-9]+|[IVXLC]+)\.?\s*$", re.IGNORECASE)
_END_MARKERS = {"THE END", "FINIS", "A NOTE ON THE TEXT"}


def _book_paragraphs(lines: Sequence[str]) -> list[str]:
    paragraphs = []
    for block in blocks_of(lines):
        text = unwrap(block)
        text = re.sub(r"(?<![A-Za-z0-9])_(?=\S)|(?<=\S)_(?![A-Za-z0-9])", "", text)  # _italics_
        if re.fullmatch(r"[*\s]+", text):  # "* * * *" scene breaks
            continue
        paragraphs.append(text)
    return paragraphs


def _austen_chapters(lines: Sequence[str]) -> list[Unit]:
    """Cut a novel's lines into chapters, labelled with volume and chapter numbers."""
    units: list[Unit] = []
    volume: int | None = None
    label: str | None = None
    body: list[str] = []
    for line in [*lines, "THE END"]:
        end = line.strip().upper() in _END_MARKERS
        chapter = _CHAPTER_RE.match(line)
        if (end or chapter) and label is not None:
            units.append(Unit(label, _book_paragraphs(body)))
        if end:
            break
        if m := _VOLUME_RE.match(line):
            volume = roman_to_int(m.group(1).upper())
        elif chapter:
            number = roman_to_int(chapter.group(1).upper())
            label = f"Volume {volume}, Chapter {number}" if volume else f"Chapter {number}"
            body = []
        else:
            body.append(line)
    return units


def austen_documents(roots: dict[str, Path]) -> list[Doc]:
    novels = read_r_lazyload(roots["r-cran-janeaustenr"] / "usr/lib/R/site-library/janeaustenr/data")
    docs: list[Doc] = []
    for key, title in AUSTEN_TITLES.items():

        def make(k: int, unit: Unit, key: str = key, title: str = title) -> Doc:
            text = join_paragraphs(unit.paragraphs)
            return Doc(f"austen-{key}-{k:03d}", "janeausten", "fiction", f"{title}, {unit.label}", text)

        docs.extend(book_documents(_austen_chapters(novels[key]), make))
    return docs


def mobydick_documents(roots: dict[str, Path]) -> list[Doc]:
    data = read_r_lazyload(roots["r-cran-tokenizers"] / "usr/lib/R/site-library/tokenizers/data")
    lines = "\n".join(data["mobydick"]).replace("\r\n", "\n").split("\n")
    units: list[Unit] = []
    i = 0
    label: str | None = None
    body: list[str] = []
    while i < len(lines):
        line = lines[i]
        if line.startswith("End of Project Gutenberg"):
            break
        if line.startswith("CHAPTER ") or line.strip() == "Epilogue":
            if label is not None:
                units.append(Unit(label, _book_paragraphs(body)))
            heading = [line.strip()]
            while i + 1 < len(lines) and lines[i + 1].strip():  # wrapped chapter titles
                i += 1
                heading.append(lines[i].strip())
            label = " ".join(heading).replace("CHAPTER", "Chapter", 1)
            body = []
        elif label is not None:
            body.append(line)
        i += 1
    if label is not None:
        units.append(Unit(label, _book_paragraphs(body)))

    def make(k: int, unit: Unit) -> Doc:
        return Doc(
            f"melville-mobydick-{k:03d}",
            "mobydick",
            "fiction",
            f"Moby Dick, {unit.label}",
            join_paragraphs(unit.paragraphs),
        )

    return book_documents(units, make)


# --------------------------------------------------------------------------------------------
# scripture: King James Bible
# --------------------------------------------------------------------------------------------

KJV_BOOKS: dict[str, str] = {
    "Ge": "Genesis", "Exo": "Exodus", "Lev": "Leviticus", "Num": "Numbers", "Deu": "Deuteronomy",
    "Josh": "Joshua", "Jdgs": "Judges", "Ruth": "Ruth", "1Sm": "1 Samuel", "2Sm": "2 Samuel",
    "1Ki": "1 Kings", "2Ki": "2 Kings", "1Chr": "1 Chronicles", "2Chr": "2 Chronicles", "Ezra": "Ezra",
    "Neh": "Nehemiah", "Est": "Esther", "Job": "Job", "Psa": "Psalms", "Prv": "Proverbs",
    "Eccl": "Ecclesiastes", "SSol": "Song of Solomon", "Isa": "Isaiah", "Jer": "Jeremiah",
    "Lam": "Lamentations", "Eze": "Ezekiel", "Dan": "Daniel", "Hos": "Hosea", "Joel": "Joel",
    "Amos": "Amos", "Obad": "Obadiah", "Jonah": "Jonah", "Mic": "Micah", "Nahum": "Nahum",
    "Hab": "Habakkuk", "Zep": "Zephaniah", "Hag": "Haggai", "Zec": "Zechariah", "Mal": "Malachi",
    "Mat": "Matthew", "Mark": "Mark", "Luke": "Luke", "John": "John", "Acts": "Acts",
    "Rom": "Romans", "1Cor": "1 Corinthians", "2Cor": "2 Corinthians", "Gal": "Galatians",
    "Eph": "Ephesians", "Phi": "Philippians", "Col": "Colossians", "1Th": "1 Thessalonians",
    "2Th": "2 Thessalonians", "1Tim": "1 Timothy", "2Tim": "2 Timothy", "Titus": "Titus",
    "Phmn": "Philemon", "Heb": "Hebrews", "Jas": "James", "1Pet": "1 Peter", "2Pet": "2 Peter",
    "1Jn": "1 John", "2Jn": "2 John", "3Jn": "3 John", "Jude": "Jude", "Rev": "Revelation",
}  # fmt: skip


def unlzw(data: bytes, max_bits: int = 16) -> bytes:
    """Decode a ``compress(1)`` LZW code stream in block mode (the 3-byte header stripped).

    Codes are packed least-significant bit first, start at 9 bits and grow to ``max_bits``;
    code 256 clears the table. compress writes codes in groups of eight, so whenever the code
    width changes the rest of the current group is padding and must be skipped.
    """
    bits = int.from_bytes(data, "little")
    n_total = len(data) * 8
    pos, width, in_group = 0, 9, 0
    table: list[bytes] = [bytes([i]) for i in range(256)] + [b""]
    prev: bytes | None = None
    out = bytearray()
    while pos + width <= n_total:
        code = (bits >> pos) & ((1 << width) - 1)
        pos += width
        in_group += 1
        if code == 256:  # CLEAR
            if in_group % 8:
                pos += width * (8 - in_group % 8)
            width, in_group, prev = 9, 0, None
            del table[257:]
            continue
        if code < len(table):
            entry = table[code]
        elif code == len(table) and prev is not None:
            entry = prev + prev[:1]
        else:
            raise ValueError(f"corrupt LZW stream: code {code} with table size {len(table)}")
        out += entry
        if prev is not None and len(table) < (1 << max_bits):
            table.append(prev + entry[:1])
        prev = entry
        if len(table) > (1 << width) - 1 and width < max_bits:
            if in_group % 8:
                pos += width * (8 - in_group % 8)
            width, in_group = width + 1, 0
    return bytes(out)


def read_bible_data(path: Path) -> str:
    """Decode ``bible.data`` of the Bible Retrieval System (bible-kjv-text).

    Layout: a 32-byte magic string ("EC02 Compressed Data File"), then big-endian 32-bit
    integers at offset 84: block size, block count N and N+1 file offsets; block i is an
    independent LZW stream (``compress -b16``) at [offset[i], offset[i+1]) that decodes to
    ``block size`` bytes of text (the last one shorter).
    """
    data = path.read_bytes()
    if not data.startswith(b"EC02"):
        raise SystemExit(f"{path}: unexpected file format")
    block_size, n_blocks = struct.unpack_from(">II", data, 84)
    offsets = struct.unpack_from(f">{n_blocks + 1}I", data, 92)
    text = b"".join(unlzw(data[a:b]) for a, b in itertools.pairwise(offsets))
    if len(text) > block_size * n_blocks:
        raise SystemExit(f"{path}: decoded more text than the header announces")
    return text.decode("ascii")


def kjv_documents(roots: dict[str, Path]) -> list[Doc]:
    text = read_bible_data(roots["bible-kjv-text"] / "usr/lib/bible.data")
    chapters: dict[tuple[str, int], list[str]] = {}
    verse_re = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")
    for line in text.split("\n")[1:]:  # line 0 is a title line
        if not line.strip():
            continue
        m = verse_re.match(line)
        if not m:
            raise SystemExit(f"bible.data: unexpected line {line[:60]!r}")
        chapters.setdefault((m.group(1), int(m.group(2))), []).append(m.group(4).strip())
    docs: list[Doc] = []
    for abbrev, book in KJV_BOOKS.items():
        numbers = sorted(ch for (b, ch) in chapters if b == abbrev)
        units = [Unit(f"{book} {ch}", [" ".join(chapters[abbrev, ch])]) for ch in numbers]
        position = 0  # each chapter is one paragraph, so this indexes `numbers`
        for unit in merge_short(units):
            doc_id = f"kjv-{slug(book)}-{numbers[position]:03d}"
            position += len(unit.paragraphs)
            docs.append(
                Doc(doc_id, "kjv", "scripture", f"The King James Bible, {unit.label}", join_paragraphs(unit.paragraphs))
            )
    return docs


# --------------------------------------------------------------------------------------------
# quotations: fortunes
# --------------------------------------------------------------------------------------------

FORTUNE_SKIP = {"ascii-art": "ASCII drawings, not prose", "translate-me": "Latin, not English"}
FORTUNES_PER_DOC = 100
FORTUNE_DOC_MAX_WORDS = 2000


_MOJIBAKE_RE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf]+")


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 text that was decoded as Latin-1, possibly twice (a right quote stored as "Ã¢Â" + C1 bytes)."""

    def fix(match: re.Match[str]) -> str:
        try:
            return match.group(0).encode("latin-1").decode("utf-8")
        except UnicodeError:
            return match.group(0)

    for _ in range(3):
        repaired = _MOJIBAKE_RE.sub(fix, text)
        if repaired == text:
            break
        text = repaired
    return text


def _clean_fortune(entry: str) -> str | None:
    entry = re.sub(r".\x08", "", entry)  # overstrike (underlining) sequences
    entry = repair_mojibake(entry)  # a few cookies in "law", "computers" and "pets"
    lines = [line.strip() for line in clean_inline(entry.expandtabs(8)).split("\n")]
    text = "\n".join(line for line in lines if line)
    if not text or letter_ratio(text) < 0.5:
        return None
    return text


def fortunes_documents(roots: dict[str, Path]) -> list[Doc]:
    files: dict[str, Path] = {}
    for package in ("fortunes", "fortunes-min"):
        base = roots[package] / "usr/share/games/fortunes"
        for path in sorted(base.iterdir()):
            if path.is_symlink() or not path.is_file() or path.suffix in {".dat", ".u8"}:
                continue
            if "off" in path.relative_to(base).parts or path.name in FORTUNE_SKIP:
                continue
            files[path.name] = path
    docs: list[Doc] = []
    for name in sorted(files):
        raw = files[name].read_bytes()
        try:
            content = raw.decode("utf-8")
        except UnicodeDecodeError:
            content = raw.decode("latin-1")
        entries = [e for e in (_clean_fortune(x) for x in re.split(r"^%[ \t]*$", content, flags=re.M)) if e]
        units: list[Unit] = []
        group: list[str] = []
        for entry in entries:
            if group and (
                len(group) >= FORTUNES_PER_DOC
                or sum(map(word_count, group)) + word_count(entry) > FORTUNE_DOC_MAX_WORDS
            ):
                units.append(Unit(name, group))
                group = []
            group.append(entry)
        if group:
            units.append(Unit(name, group))
        if sum(u.words for u in units) < MIN_WORDS:
            continue
        if len(units) > 1 and units[-1].words < MIN_WORDS:
            last = units.pop()
            units[-1] = Unit(name, units[-1].paragraphs + last.paragraphs)
        for k, unit in enumerate(units, 1):
            suffix = f" (part {k} of {len(units)})" if len(units) > 1 else ""
            docs.append(
                Doc(
                    f"fortunes-{slug(name)}-{k:03d}",
                    "fortunes",
                    "quotations",
                    f"fortune cookies: {name}{suffix}",
                    join_paragraphs(unit.paragraphs),
                )
            )
    return docs


# --------------------------------------------------------------------------------------------
# definitions: WordNet glosses
# --------------------------------------------------------------------------------------------

GLOSSES_PER_DOC = 200
GLOSS_DOC_MAX_WORDS = 2500


def wordnet_documents(roots: dict[str, Path]) -> list[Doc]:
    root = roots["wordnet-base"]
    lexnames: dict[int, str] = {}
    with gzip.open(root / "usr/share/man/man5/lexnames.5WN.gz", "rt", encoding="utf-8") as man:
        for line in man:
            if m := re.match(r"^(\d\d)\s+([a-z]+\.[A-Za-z]+)\s", line):
                lexnames[int(m.group(1))] = m.group(2)
    docs: list[Doc] = []
    for pos in ("noun", "verb", "adj", "adv"):
        groups: dict[str, list[list[str]]] = {}
        for line in (root / f"usr/share/wordnet/data.{pos}").read_text(encoding="utf-8").split("\n"):
            if not line or line.startswith("  "):  # licence header lines start with two spaces
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            lexname = lexnames[int(fields[1])]
            n_words = int(fields[3], 16)
            words: list[str] = []
            for word in fields[4 : 4 + 2 * n_words : 2]:
                word = re.sub(r"\((a|p|ip)\)$", "", word).replace("_", " ")
                if word not in words:
                    words.append(word)
            entry = f"{', '.join(words)}: {gloss.strip()}"
            chunks = groups.setdefault(lexname, [[]])
            if (
                len(chunks[-1]) >= GLOSSES_PER_DOC
                or sum(map(word_count, chunks[-1])) + word_count(entry) > GLOSS_DOC_MAX_WORDS
            ):
                chunks.append([])
            chunks[-1].append(entry)
        for lexname, chunks in groups.items():
            if len(chunks) > 1 and sum(map(word_count, chunks[-1])) < MIN_WORDS:
                chunks[-2].extend(chunks.pop())
            if sum(map(word_count, chunks[-1])) < MIN_WORDS:
                continue  # a tiny lexicographer file (too short to be a document)
            for k, chunk in enumerate(chunks, 1):
                suffix = f" (part {k} of {len(chunks)})" if len(chunks) > 1 else ""
                text = "\n".join(clean_inline(g).replace("\n", " ") for g in chunk)
                docs.append(
                    Doc(
                        f"wordnet-{slug(lexname)}-{k:03d}",
                        "wordnet",
                        "definitions",
                        f"WordNet glosses: {lexname}{suffix}",
                        text,
                    )
                )
    return docs


# --------------------------------------------------------------------------------------------
# technical: Python documentation (HTML)
# --------------------------------------------------------------------------------------------

PYDOC_DIRS = tuple(
    "c-api distributing extending faq howto install installing library reference tutorial using whatsnew".split()  # noqa: SIM905
)
PYDOC_SKIP_PAGES = {"whatsnew/changelog.html"}  # an enormous list of bug numbers


class SphinxProse(HTMLParser):
    """Collect the prose of a Sphinx page's ``<div role="main">`` as (kind, text) blocks.

    ``kind`` is ``"h1"``..``"h6"`` for headings and ``"p"`` otherwise. Code blocks, tables,
    API signatures, permalink markers and everything outside the main body are dropped.
    """

    BLOCK_TAGS: ClassVar[frozenset[str]] = frozenset(
        "p div section li ul ol dl dt dd blockquote h1 h2 h3 h4 h5 h6 caption figure figcaption aside".split()  # noqa: SIM905
    )
    SKIP_TAGS: ClassVar[frozenset[str]] = frozenset(
        {"pre", "table", "script", "style", "nav", "form", "button", "svg", "math"}
    )
    VOID_TAGS: ClassVar[frozenset[str]] = frozenset(
        {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, opens main body, skipped)
        self.blocks: list[tuple[str, str]] = []
        self.buffer: list[str] = []

    @property
    def _active(self) -> bool:
        return any(main for _, main, _ in self.stack) and not any(skip for _, _, skip in self.stack)

    def _flush(self, kind: str = "p") -> None:
        text = " ".join("".join(self.buffer).split())
        self.buffer = []
        if text:
            self.blocks.append((kind, text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID_TAGS:
            if tag == "br" and self._active:
                self.buffer.append(" ")
            return
        attr = {k: v or "" for k, v in attrs}
        classes = set(attr.get("class", "").split())
        main = tag == "div" and attr.get("role") == "main"
        skip = (
            tag in self.SKIP_TAGS
            or bool(
                classes & {"headerlink", "highlight", "sig", "footer", "related", "sphinxsidebar", "toctree-wrapper"}
            )
            or any(c.startswith("highlight-") for c in classes)
        )
        if tag in self.BLOCK_TAGS and self._active:
            self._flush()
        self.stack.append((tag, main, skip))

    def handle_endtag(self, tag: str) -> None:
        if not any(t == tag for t, _, _ in self.stack):
            return
        active = self._active
        while self.stack:
            t, _, _ = self.stack.pop()
            if t == tag:
                break
        if tag in self.BLOCK_TAGS and active:
            self._flush(tag if re.fullmatch(r"h[1-6]", tag) else "p")

    def handle_data(self, data: str) -> None:
        if self._active:
            self.buffer.append(data)


def _sections(blocks: Sequence[tuple[str, str]], fallback_title: str) -> tuple[str, list[Unit]]:
    """Split (kind, text) blocks into sections that start at each level-1/2 heading."""
    title = next((text for kind, text in blocks if kind == "h1"), fallback_title)
    units: list[Unit] = []
    for kind, text in blocks:
        if kind in {"h1", "h2"} or not units:
            units.append(Unit(title if kind == "h1" else text, []))
        units[-1].paragraphs.append(text)
    return title, [u for u in units if u.paragraphs]


def prose_share(paragraphs: Sequence[str], min_words: int = 8) -> float:
    """Fraction of the words that sit in paragraphs of at least ``min_words`` words.

    Low values mean lists of names, option tables or headings rather than running text.
    """
    counts = [word_count(p) for p in paragraphs]
    total = sum(counts)
    return sum(n for n in counts if n >= min_words) / total if total else 0.0


def page_documents(
    key: str, genre: str, id_stem: str, title: str, units: Sequence[Unit], licence: str | None = None
) -> list[Doc]:
    """A documentation page -> one document, or several sections of it when it is long."""
    total = sum(u.words for u in units)
    if total < MIN_WORDS:
        return []
    parts = [Unit(title, [p for u in units for p in u.paragraphs])] if total <= MAX_WORDS else pack_units(units)
    if len(parts) > 1 and parts[-1].words < MIN_WORDS:
        tail = parts.pop()
        parts[-1] = _combine([parts[-1], tail])
    parts = [part for part in parts if part.words >= MIN_WORDS and prose_share(part.paragraphs) >= 0.5]
    docs = []
    for k, part in enumerate(parts, 1):
        suffix = f" (part {k} of {len(parts)})" if len(parts) > 1 else ""
        docs.append(
            Doc(f"{id_stem}-{k:02d}", key, genre, f"{title}{suffix}", join_paragraphs(part.paragraphs), licence)
        )
    return docs


def pydoc_documents(roots: dict[str, Path]) -> list[Doc]:
    base = roots["python3.11-doc"] / "usr/share/doc/python3.11/html"
    docs: list[Doc] = []
    for directory in PYDOC_DIRS:
        for path in sorted((base / directory).rglob("*.html")):
            rel = path.relative_to(base).as_posix()
            if rel in PYDOC_SKIP_PAGES:
                continue
            parser = SphinxProse()
            parser.feed(path.read_text(encoding="utf-8"))
            parser.close()
            blocks = [(kind, clean_inline(text)) for kind, text in parser.blocks]
            blocks = [(kind, text) for kind, text in blocks if text and (kind != "p" or letter_ratio(text) >= 0.55)]
            title, units = _sections(blocks, rel)
            docs.extend(
                page_documents(
                    "pydoc",
                    "technical",
                    f"pydoc-{slug(rel.removesuffix('.html'))}",
                    f"Python 3.11 documentation: {title}",
                    units,
                    "PSF-2.0",
                )
            )
    return docs


# --------------------------------------------------------------------------------------------
# technical: Linux kernel documentation (reStructuredText)
# --------------------------------------------------------------------------------------------

LINUXDOC_SKIP_DIRS = ("translations/", "ABI/", "devicetree/bindings/", "features/", "sphinx", "output/")
_ADMONITIONS = frozenset(
    "note warning important tip hint attention caution danger error seealso admonition topic sidebar rubric".split()  # noqa: SIM905
)
_ADORNMENT_RE = re.compile(r"^\s*([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")
_SIMPLE_TABLE_RE = re.compile(r"^\s*=+( +=+)+\s*$")
_GRID_RE = re.compile(r"^\s*(\+[-=+]+\+|\|.*\|)\s*$")
_BULLET_RE = re.compile(r"^(\s*)(?:[-*+\u2022]|\d+[.)]|#[.)]|\(?[a-zA-Z0-9]\))\s+")
_FIELD_RE = re.compile(r"^\s*:[A-Za-z][\w .-]*:(\s|$)")
_DIRECTIVE_RE = re.compile(r"^(\s*)\.\.(?:\s+([\w:-]+)::(.*)|\s.*|)$")


def strip_rst_inline(text: str) -> str:
    text = re.sub(r":[\w:+.-]+:`([^`<]*?)\s*<[^>`]*>`", r"\1", text)  # :role:`title <target>`
    text = re.sub(r":[\w:+.-]+:`~?([^`]*)`", r"\1", text)  # :role:`target`
    text = re.sub(r"`([^`<]*?)\s*<[^>`]*>`_{1,2}", r"\1", text)  # `title <url>`_
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`_{0,2}", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"\1", text)
    text = re.sub(r"\s?\[(?:#\w*|\*|\d+)\]_", "", text)  # footnote references
    text = re.sub(r"\|([\w .-]+)\|", r"\1", text)  # substitutions
    text = re.sub(r"(?<=\w)_(?=[\s.,;:)]|$)", "", text)  # reference_ names
    return text


def _looks_like_code(text: str) -> bool:
    if letter_ratio(text) < 0.65:
        return True
    code_marks = len(re.findall(r"[{};=<>\[\]#&|$\\]|->|::|\(\)", text))
    return code_marks > max(3, word_count(text) // 6)


def rst_blocks(source: str) -> list[tuple[str, str]]:
    """Reduce reStructuredText to (kind, text) prose blocks; kind is "h1" or "p"."""
    lines = source.expandtabs(8).split("\n")
    blocks: list[tuple[str, str]] = []
    para: list[str] = []
    para_indent = 0
    para_dropped = False
    skip_deeper_than: int | None = None  # skip literal/directive bodies indented beyond this
    in_table = False

    def flush(kind: str = "p") -> None:
        nonlocal para, para_dropped
        if para and not para_dropped:
            text = strip_rst_inline(unwrap(para))
            if text.endswith("::"):
                text = text[:-2].rstrip() + (":" if not text[:-2].rstrip().endswith(":") else "")
            if (kind != "p" or not _looks_like_code(text)) and text.strip(": "):
                blocks.append((kind, text))
        para, para_dropped = [], False

    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if skip_deeper_than is not None:
            if not stripped or indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if in_table:
            if _SIMPLE_TABLE_RE.match(line) and (i + 1 >= len(lines) or not lines[i + 1].strip()):
                in_table = False
            continue
        if not stripped:
            ends_literal = bool(para) and para[-1].rstrip().endswith("::")
            flush()
            if ends_literal:
                skip_deeper_than = para_indent
            continue
        if _SIMPLE_TABLE_RE.match(line):
            flush()
            in_table = True
            continue
        if _ADORNMENT_RE.match(line):
            flush("h1" if len(para) == 1 else "p")
            continue
        if _GRID_RE.match(line):
            para_dropped = True
            para.append(line)
            continue
        if m := _DIRECTIVE_RE.match(line):
            flush()
            name = (m.group(2) or "").lower()
            if name in _ADMONITIONS:
                if m.group(3) and m.group(3).strip():
                    para, para_indent = [m.group(3)], indent
            else:
                skip_deeper_than = indent  # comments, code-block, toctree, kernel-doc, ...
            continue
        if _FIELD_RE.match(line) and not para:
            para, para_indent, para_dropped = [line], indent, True
            continue
        if bullet := _BULLET_RE.match(line):
            flush()
            para, para_indent = [line[bullet.end() :]], indent
            continue
        if not para:
            para_indent = indent
        elif indent > para_indent and para[-1].rstrip().endswith("::"):
            flush()
            skip_deeper_than = para_indent
            continue
        para.append(line)
    flush()
    return blocks


def linuxdoc_documents(roots: dict[str, Path]) -> list[Doc]:
    base = roots["linux-doc-6.1"] / "usr/share/doc/linux-doc-6.1/Documentation"
    docs: list[Doc] = []
    for path in sorted(base.rglob("*.rst.gz")):
        rel = path.relative_to(base).as_posix()
        if rel.startswith(LINUXDOC_SKIP_DIRS):
            continue
        source = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
        spdx = re.search(r"SPDX-License-Identifier:\s*(.+)", source[:2000])
        licence = spdx.group(1).strip() if spdx else "GPL-2.0 (kernel default)"
        blocks = [(kind, clean_inline(text)) for kind, text in rst_blocks(source)]
        blocks = [(kind, text) for kind, text in blocks if text]
        title, units = _sections(blocks, rel.removesuffix(".rst.gz"))
        stem = f"linuxdoc-{slug(rel.removesuffix('.rst.gz'))}"
        docs.extend(
            page_documents("linuxdoc", "technical", stem, f"Linux kernel documentation: {title}", units, licence)
        )
    return docs


# --------------------------------------------------------------------------------------------
# jargon: the Jargon File
# --------------------------------------------------------------------------------------------

JARGON_SKIP_SECTIONS = ("Chapter 3. Revision History", "Bibliography")
JARGON_LEXICON_DOC_WORDS = 1800


def _is_box_drawing(ch: str) -> bool:
    return "\u2500" <= ch <= "\u257f"


def _jargon_paragraphs(lines: Sequence[str]) -> list[str]:
    paragraphs = []
    for block in blocks_of(lines):
        if any(_is_box_drawing(ch) for line in block for ch in line):
            continue  # box-drawing tables and rules
        text = unwrap(block)
        if min(len(line) - len(line.lstrip(" ")) for line in block) > 4 and _looks_like_code(text):
            continue  # an indented code example
        text = re.sub(r"\{([^{}]+)\}", r"\1", text)  # {cross-references}
        paragraphs.append(text)
    return paragraphs


def jargon_documents(roots: dict[str, Path]) -> list[Doc]:
    path = roots["jargon-text"] / "usr/share/doc/jargon-text/jargon.txt.gz"
    text = _SPACE_CHARS.sub(" ", gzip.decompress(path.read_bytes()).decode("utf-8"))
    lines = text.split("\n")
    # Column-0 lines are headings: "Chapter N. ...", subsection names, "Glossary", "Appendix X. ...".
    # Everything before "Chapter 1." is the title page and table of contents.
    sections: list[tuple[str, list[str]]] = []
    for line in lines:
        if line and not line[0].isspace() and not _is_box_drawing(line[0]):
            if sections or line.startswith("Chapter 1."):
                sections.append((line.strip(), []))
        elif sections:
            sections[-1][1].append(line)
    docs: list[Doc] = []
    chapters: list[tuple[str, list[Unit]]] = []  # top-level chapter/appendix -> its sections
    for heading, body in sections:
        if heading.startswith(JARGON_SKIP_SECTIONS):
            chapters.append(("", []))  # a skipped section also ends the current chapter
            continue
        if heading == "Glossary":
            docs.extend(_jargon_lexicon(body))
            continue
        paragraphs = _jargon_paragraphs(body)
        for i, paragraph in enumerate(paragraphs):  # "Part II. The Jargon Lexicon" front matter
            if re.match(r"^Part [IVX]+\. ", paragraph):
                paragraphs = paragraphs[:i]
                break
        if paragraphs and paragraphs[0] == "Table of Contents":  # drop a section's own contents list
            paragraphs = paragraphs[1:]
            while paragraphs and word_count(paragraphs[0]) < 10 and not paragraphs[0].endswith("."):
                paragraphs = paragraphs[1:]
        unit = Unit(heading, [heading, *paragraphs])
        if re.match(r"^(Chapter \d+|Appendix [A-Z])\.", heading) or not chapters or not chapters[-1][0]:
            chapters.append((heading, [unit]))
        else:
            chapters[-1][1].append(unit)
    merged: list[tuple[str, list[Unit]]] = []  # a short chapter joins the previous one of its kind
    for heading, units in chapters:
        if not heading:
            continue
        if merged and sum(u.words for u in units) < MIN_WORDS and merged[-1][0][:8] == heading[:8]:
            merged[-1] = (join_labels(merged[-1][0], heading), merged[-1][1] + units)
        else:
            merged.append((heading, units))
    for heading, units in merged:
        if sum(u.words for u in units) < MIN_WORDS:
            continue
        m = re.match(r"^(Chapter \d+|Appendix [A-Z])\.", heading)
        stem = f"jargon-{slug(m.group(1)) if m else slug(heading)}"
        docs.extend(page_documents("jargon", "jargon", stem, f"The Jargon File, {heading}", units))
    return docs


def _jargon_lexicon(body: Sequence[str]) -> list[Doc]:
    """Lexicon entries (``   :term: pos.`` then indented paragraphs) packed into documents.

    Each letter of the lexicon starts with a two-space-indented letter heading followed by an
    index of that letter's terms; those indexes (and the one before the first entry) are dropped.
    """
    entry_re = re.compile(r"^   :(.+?):\s*(.*)$")
    entries: list[Unit] = []
    in_index = True
    for line in body:
        if re.match(r"^\s*Part [IVX]+\. ", line):  # "Part III. Appendices" and its contents list
            break
        if m := entry_re.match(line):
            term, rest = m.group(1).strip(), m.group(2).strip()
            rest = re.sub(r"^//\s*,?\s*", "", rest)  # empty pronunciation
            header = f"{term}: {rest}" if rest else term
            entries.append(Unit(term, [header]))
            in_index = False
        elif re.match(r"^  \S", line):  # a letter heading: its index of terms follows
            in_index = True
        elif not in_index:
            entries[-1].paragraphs.append(line)
    units = [Unit(u.label, [u.paragraphs[0], *_jargon_paragraphs(u.paragraphs[1:])]) for u in entries]
    docs = []
    for k, unit in enumerate(pack_units(units, JARGON_LEXICON_DOC_WORDS), 1):
        docs.append(
            Doc(
                f"jargon-lexicon-{k:03d}",
                "jargon",
                "jargon",
                f"The Jargon File, lexicon: {unit.label}",
                join_paragraphs(unit.paragraphs),
            )
        )
    return docs


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    key: str
    genre: str
    packages: tuple[str, ...]
    budget_words: int
    build: Callable[[dict[str, Path]], list[Doc]]


SOURCES: tuple[Source, ...] = (
    Source("janeausten", "fiction", ("r-cran-janeaustenr",), 190_000, austen_documents),
    Source("mobydick", "fiction", ("r-cran-tokenizers",), 70_000, mobydick_documents),
    Source("kjv", "scripture", ("bible-kjv-text",), 250_000, kjv_documents),
    Source("fortunes", "quotations", ("fortunes", "fortunes-min"), 250_000, fortunes_documents),
    Source("wordnet", "definitions", ("wordnet-base",), 250_000, wordnet_documents),
    Source("pydoc", "technical", ("python3.11-doc",), 135_000, pydoc_documents),
    Source("linuxdoc", "technical", ("linux-doc-6.1",), 125_000, linuxdoc_documents),
    Source("jargon", "jargon", ("jargon-text",), 250_000, jargon_documents),
)


def build(work: Path, allow_other_versions: bool) -> tuple[list[Doc], list[str]]:
    roots: dict[str, Path] = {}
    versions: dict[str, str] = {}
    for package in PINNED_VERSIONS:
        roots[package], versions[package] = fetch_package(package, work, allow_other_versions)
    corpus: list[Doc] = []
    report = ["| source | genre | packages | candidate docs / words | kept docs / words |", "|---|---|---|---|---|"]
    for source in SOURCES:
        candidates = source.build(roots)
        kept = select_evenly(candidates, source.budget_words)
        corpus.extend(kept)
        packages = ", ".join(f"{p} {versions[p]}" for p in source.packages)
        report.append(
            f"| {source.key} | {source.genre} | {packages} | {len(candidates)} / {sum(d.words for d in candidates):,} "
            f"| {len(kept)} / {sum(d.words for d in kept):,} |"
        )
        licences = Counter(d.licence for d in kept if d.licence)
        if source.key == "linuxdoc":
            report.append(f"linuxdoc SPDX identifiers of kept documents: {dict(sorted(licences.items()))}")
    ids = [d.id for d in corpus]
    duplicates = sorted(k for k, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise SystemExit(f"duplicate document ids: {duplicates[:10]}")
    corpus.sort(key=lambda d: d.id)
    return corpus, report


def write_corpus(docs: Sequence[Doc], out: Path) -> None:
    payload = "".join(json.dumps(d.record(), ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET))
    tmp.replace(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench/data/corpus.jsonl.xz"), help="output .jsonl.xz path")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/corpus-work"),
        help="directory for downloaded .debs and extracted files (kept between runs)",
    )
    parser.add_argument(
        "--allow-other-versions",
        action="store_true",
        help="use the current Debian version when a pinned one is unavailable",
    )
    args = parser.parse_args(argv)

    docs, report = build(args.work.resolve(), args.allow_other_versions)
    write_corpus(docs, args.out)
    per_genre: dict[str, list[int]] = {}
    for d in docs:
        per_genre.setdefault(d.genre, []).append(d.words)
    print("\n".join(report), file=sys.stderr)
    for genre, counts in sorted(per_genre.items()):
        print(
            f"{genre:12s} {len(counts):4d} docs {sum(counts):9,d} words (min {min(counts)}, max {max(counts)})",
            file=sys.stderr,
        )
    words = sum(d.words for d in docs)
    print(
        f"wrote {len(docs)} documents, {words:,} words, {args.out.stat().st_size:,} bytes to {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
