"""The shipped corpus and user text: genres, a deterministic split by document, fixed-length contexts."""

from __future__ import annotations

import gzip
import json
import lzma
from collections import Counter

import pytest

from bench.corpus import load_corpus, make_contexts, split_documents
from bench.errors import BenchError


def test_shipped_corpus_is_varied_and_labelled(docs):
    genres = Counter(d.genre for d in docs)
    assert set(genres) >= {"fiction", "scripture", "quotations", "definitions", "technical"}
    assert all(n >= 40 for n in genres.values()), genres
    assert len({d.id for d in docs}) == len(docs)


def test_split_is_by_document_and_deterministic(docs):
    a, b = split_documents(docs), split_documents(list(reversed(docs)))
    assert [d.id for d in a["eval"]] == [d.id for d in b["eval"]]
    assert {d.id for d in a["train"]}.isdisjoint(d.id for d in a["eval"])
    assert 0.05 < len(a["eval"]) / len(docs) < 0.15
    assert len({d.genre for d in a["eval"]}) >= 5


def test_contexts_have_fixed_length_and_know_their_document():
    docs = load_corpus()[:50]
    ctx = make_contexts(docs, lambda t: [len(w) for w in t.split()], ctx_len=16, n_contexts=40, bos_id=0)
    assert ctx.tokens.shape == (40, 16) and (ctx.tokens[:, 0] == 0).all()
    assert ctx.doc.max() < len(ctx.documents)
    with pytest.raises(BenchError, match="give more text"):
        make_contexts(docs[:1], lambda t: t.split()[:20], ctx_len=16, n_contexts=5)


def test_user_text_files(tmp_path):
    txt = tmp_path / "mine.txt"
    txt.write_text("\n\n".join(f"Paragraph {i} " + "word " * 400 for i in range(10)))
    docs = load_corpus(str(txt))
    assert len(docs) == 3 and all(d.genre == "unlabelled" for d in docs)
    jl = tmp_path / "mine.jsonl"
    jl.write_text(json.dumps({"text": "hello there", "genre": "greeting"}) + "\n{oops\n")
    with pytest.raises(BenchError, match="line 2 is not valid JSON"):
        load_corpus(str(jl))
    jl.write_text(json.dumps({"text": "hello there", "genre": "greeting"}) + "\n")
    assert load_corpus(str(jl))[0].genre == "greeting"


@pytest.mark.parametrize("n", [3, 7, 12, 30])
def test_n_contexts_from_m_documents_span_min_n_m_documents(n):
    """Round-robin: every document's first window, then every second...: n contexts from m documents come from
    min(n, m) documents, the first m rows are the documents' first windows in order."""
    from bench.corpus import Document

    m = 7
    # token of word w of document i: 1000 i + w
    docs = [Document(f"d{i}", "g", " ".join(str(1000 * i + w) for w in range(40 + 10 * i))) for i in range(m)]
    ctx = make_contexts(docs, lambda t: [int(w) for w in t.split()], ctx_len=10, n_contexts=n)
    assert len(set(ctx.doc.tolist())) == min(n, m)
    first = ctx.tokens[: min(n, m)]
    assert [row[0] for row in first.tolist()] == [1000 * i for i in range(min(n, m))]
    if n > m:  # the second round starts with document 0's second window
        assert ctx.tokens[m, 0] == 10 and ctx.doc[m] == 0


def test_damaged_user_files_are_one_line_errors_naming_file_and_line(tmp_path):
    good = json.dumps({"text": "hello there"}) + "\n"
    cases = {
        "binary.jsonl": (good.encode() + b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00\n", "line 2 is not UTF-8"),
        "notgzip.jsonl.gz": (good.encode(), "compressed file is damaged"),
        "truncated.jsonl.xz": (lzma.compress((good * 200).encode())[:-40], "compressed file is damaged"),
    }
    for name, (data, fragment) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BenchError) as e:
            load_corpus(str(tmp_path / name))
        assert fragment in str(e.value) and name in str(e.value) and "\n" not in str(e.value), str(e.value)
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(BenchError, match="folder.jsonl: cannot read it"):
        load_corpus(str(tmp_path / "folder.jsonl"))
    (tmp_path / "fine.jsonl.gz").write_bytes(gzip.compress(good.encode()))
    assert load_corpus(str(tmp_path / "fine.jsonl.gz"))[0].text == "hello there"


def test_a_dataset_name_not_in_the_local_cache_is_a_one_line_error():
    with pytest.raises(BenchError, match="not a file and not a Hugging Face dataset in the local cache|pip install datasets"):
        load_corpus("decompbench-no-such-dataset")
