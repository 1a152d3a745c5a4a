"""Corpus builders: deterministic, exact in length, documented order; user files and folders; clear errors."""

from __future__ import annotations

import pytest

from yoco_eval.errors import YocoEvalError
from yoco_eval.nll.corpora import build_document, code_parts, corpus_parts
from yoco_eval.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def byte_tok():
    return load_tokenizer("bytes")


@pytest.mark.parametrize("corpus", ["book", "code"])
@pytest.mark.parametrize("n", [2, 777, 50_000])
def test_builtin_exact_length_and_deterministic(byte_tok, corpus, n):
    a, b = build_document(corpus, byte_tok, n), build_document(corpus, byte_tok, n)
    assert len(a.tokens) == a.n_tokens == n
    assert a.tokens == b.tokens and a.sha256 == b.sha256
    assert a.n_bytes == n  # byte tokenizer: one token a byte
    longer = build_document(corpus, byte_tok, n + 1000)
    assert longer.tokens[:n] == a.tokens  # a prefix of a longer document: parts are tokenized on their own


def test_yoco_tokenizer_exact_length():
    tok = load_tokenizer("yoco-cl100k")
    doc = build_document("book", tok, 3000)
    assert len(doc.tokens) == 3000 and doc.tokenizer == "yoco-cl100k"
    text = tok.decode(doc.tokens)
    assert text.startswith("ALL'S WELL THAT ENDS WELL") or "WELL" in text[:200]
    assert abs(doc.n_bytes - len(text.encode())) <= 4


def test_book_order_is_plays_then_essays():
    _, _, parts = corpus_parts("book")
    names = [p.name for p in parts]
    plays = [n for n in names if n.endswith("_gut.txt")]
    assert names[: len(plays)] == sorted(plays) and len(plays) == 42
    assert names[len(plays) :] == sorted(names[len(plays) :]) and len(names) - len(plays) == 49


def test_code_is_sorted_stdlib_without_tests():
    parts = list(code_parts())
    names = [p.name for p in parts]
    assert names == sorted(names) and len(names) > 500
    assert all(p.text.startswith(f"# ---- file: {p.name} ----\n") for p in parts[:20])
    bad = [n for n in names if "site-packages" in n or n.split("/")[-1].startswith("test_") or "/test/" in f"/{n}"]
    assert not bad


def test_user_file_and_folder(tmp_path, byte_tok):
    (tmp_path / "b.txt").write_text("second file\n")
    (tmp_path / "a.md").write_text("first file\n")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    whole = "# ---- file: a.md ----\nfirst file\n\n# ---- file: b.txt ----\nsecond file\n\n"
    doc = build_document(str(tmp_path), byte_tok, len(whole))
    assert byte_tok.decode(doc.tokens) == whole
    single = build_document(str(tmp_path / "a.md"), byte_tok, 5)
    assert byte_tok.decode(single.tokens) == "first"


def test_errors_are_one_line(tmp_path, byte_tok):
    (tmp_path / "short.txt").write_text("tiny")
    with pytest.raises(YocoEvalError, match="holds only 6 bytes tokens"):
        build_document(str(tmp_path / "short.txt"), byte_tok, 100)
    with pytest.raises(YocoEvalError, match="neither a built-in"):
        build_document(str(tmp_path / "missing"), byte_tok, 100)
    (tmp_path / "empty").mkdir()
    with pytest.raises(YocoEvalError, match="no text or source files"):
        build_document(str(tmp_path / "empty"), byte_tok, 100)
