"""Haystack sources, normalization, units, and tokenize-once caching."""

from __future__ import annotations

import pytest

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah import PromptBuilder, load_corpus
from yoco_eval.niah.corpus import split_units
from yoco_eval.niah.tokens import tokenize_corpus
from yoco_eval.tokenizer import YOCOTokenizer


@pytest.mark.parametrize("name,min_docs", [("noise", 1), ("pg-essays", 49), ("shakespeare", 30)])
def test_builtin_haystacks(name, min_docs):
    c = load_corpus(name)
    assert c.n_docs >= min_docs and c.text.endswith("\n") and not c.text.endswith("\n\n")
    assert len(c.sha256) == 64


def test_pg_prose_normalization_unwraps_and_restores_paragraphs():
    c = load_corpus("pg-essays")
    assert "  " not in c.text
    assert "accelerating.\n\nWe wouldn't" in c.text  # was glued as "accelerating.We" in the package files
    raw = load_corpus("pg-essays", normalize="none")
    assert "accelerating.We" in raw.text


def test_file_folder_jsonl(fixtures):
    f = load_corpus(str(fixtures / "niah" / "essay.txt"))
    assert f.n_docs == 1 and f.text.startswith("The first essay")
    j = load_corpus(str(fixtures / "niah" / "docs.jsonl"))
    assert j.n_docs == 2 and "Doc one says hello. It is short.\n\nDoc two" in j.text
    d = load_corpus(str(fixtures / "niah" / "folder"))
    assert d.n_docs == 2 and d.text.index("Alpha") < d.text.index("Beta")


def test_bad_haystacks(tmp_path, fixtures):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(YocoEvalError, match="holds no text"):
        load_corpus(str(tmp_path / "empty.txt"))
    with pytest.raises(YocoEvalError, match="neither a built-in"):
        load_corpus(str(tmp_path / "missing.txt"))
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(YocoEvalError, match="no string field 'text'"):
        load_corpus(str(tmp_path / "bad.jsonl"))
    assert load_corpus(str(tmp_path / "bad.jsonl"), field="body").n_docs == 1
    (tmp_path / "sub").mkdir()
    with pytest.raises(YocoEvalError, match="has no .txt"):
        load_corpus(str(tmp_path / "sub"))
    with pytest.raises(YocoEvalError, match="unknown haystack normalization"):
        load_corpus("noise", normalize="fancy")


def test_units_cover_text_and_mark_sentence_ends(fixtures):
    text = load_corpus(str(fixtures / "niah" / "essay.txt")).text
    units, sent = split_units(text)
    assert "".join(units) == text
    assert units[0] == "The first essay begins here."
    assert units[1] == " It has two sentences!\n" and sent[1]
    # no cut after "Mr." or "e.g."
    assert any("Mr. Smith said." in u for u in units)
    assert any("e.g. an abbreviation." in u for u in units)
    wrapped = [u for u, s in zip(units, sent) if u.startswith("A wrapped")]
    assert wrapped and wrapped[0].endswith("Smith said.")


def test_long_runs_are_split_but_not_needle_sites():
    text = ("word " * 400).strip() + ".\n"
    units, sent = split_units(text)
    assert "".join(units) == text and len(units) > 1
    assert sent[-1] and not any(sent[:-1])


def test_tokenized_once_and_reused():
    tok = YOCOTokenizer()
    c = load_corpus("pg-essays")
    a = tokenize_corpus(c, tok)
    assert tokenize_corpus(c, YOCOTokenizer()) is a  # same corpus + same tokenizer → cached
    b = PromptBuilder(tok, c)
    assert b.tc is a
    assert a.n_tokens == int(a.off[-1]) and len(a.units) == a.n_units


class _CountingTokenizer:
    """Bytes, counting calls: encode_many must batch the texts it has not seen and memoize them."""

    name = "counting-bytes"

    def __init__(self):
        from yoco_eval.tokenizer import ByteTokenizer

        self._bytes, self.calls, self.batches = ByteTokenizer(), 0, []

    def encode(self, text, bos=False):
        self.calls += 1
        return self._bytes.encode(text, bos)

    def encode_batch(self, texts):
        self.batches.append(list(texts))
        return [self._bytes.encode(t) for t in texts]

    def decode(self, ids):
        return self._bytes.decode(ids)


def test_encode_many_batches_and_memoizes(fixtures):
    tok = _CountingTokenizer()
    tc = tokenize_corpus(load_corpus(str(fixtures / "niah" / "essay.txt")), tok)
    tok.calls, tok.batches = 0, []
    texts = ["alpha beta", " beta", "gamma", " beta"]
    want = [tok._bytes.encode(t) for t in texts]
    assert tc.encode_many(texts) == want
    assert tok.batches == [["alpha beta", " beta", "gamma"]] and tok.calls == 0  # one batch, each text once
    assert tc.encode_many(["gamma", "alpha beta"]) == [want[2], want[0]] and len(tok.batches) == 1  # memoized
    assert tc.encode("gamma") == want[2] and tok.calls == 0
