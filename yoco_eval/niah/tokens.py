"""The tokenized corpus: a haystack tokenized once per tokenizer, reused by every cell (tokenizers themselves live
in ``yoco_eval.tokenizer``).

Exact prompt length rests on one property, checked rather than assumed: when two adjacent units of text are
tokenized separately, the concatenated ids equal the ids of the concatenated text. BPE tokenizers almost always
have it at sentence and line boundaries, but not everywhere (cl100k merges ``".\\n"``; GPT-2-style byte-level
tokenizers split ``"\\n\\n"`` differently before a word than at the end of a string). So after cutting the corpus
into units, every adjacent pair is checked with the actual tokenizer and unsafe pairs are merged into one unit.
The prompt builder then splices token slices and re-checks every new seam it creates (needles, start, end), and
finally re-encodes the whole prompt text once to confirm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah.corpus import Corpus, split_units
from yoco_eval.tokenizer import as_tokenizer, encode, encode_many, tokenizer_fingerprint, tokenizer_name


@dataclass
class TokenizedCorpus:
    """One pass of a corpus as units with token ids. ``ids[off[u]:off[u+1]]`` are unit ``u``'s tokens and
    ``text[coff[u]:coff[u+1]]`` its characters; the concatenation of the units is the pass."""

    corpus: Corpus
    tokenizer_fingerprint: str
    units: list[str]
    ids: np.ndarray  # int64, all units' ids back to back
    off: np.ndarray  # int64, len n+1, token offsets
    coff: np.ndarray  # int64, len n+1, character offsets
    sentence_end: np.ndarray  # bool: a needle may go after this unit
    ends_newline: np.ndarray  # bool: the unit's last char is "\n"
    starts_space: np.ndarray  # bool: the unit's first char is whitespace
    tok: Any = field(default=None, repr=False)
    n_merged: int = 0
    _enc_cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_units(self) -> int:
        return len(self.units)

    @property
    def n_tokens(self) -> int:
        return int(self.off[-1])

    @property
    def n_chars(self) -> int:
        return int(self.coff[-1])

    def unit_ids(self, u: int) -> np.ndarray:
        return self.ids[self.off[u] : self.off[u + 1]]

    # --- positions over the corpus repeated forever: global unit g is unit g % n of pass g // n -------------
    def cum(self, g):
        """Token offset of the start of global unit ``g`` (vectorized)."""
        g = np.asarray(g, dtype=np.int64)
        return (g // self.n_units) * self.n_tokens + self.off[g % self.n_units]

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Token ids of the infinitely repeated pass, positions [start, stop)."""
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        return self.ids[np.arange(start, stop, dtype=np.int64) % self.n_tokens]

    def text_units(self, g1: int, g2: int) -> str:
        """Text of global units [g1, g2)."""
        if g2 <= g1:
            return ""
        n, text = self.n_units, self.corpus.text
        p1, u1 = divmod(g1, n)
        p2, u2 = divmod(g2, n)
        if p1 == p2:
            return text[self.coff[u1] : self.coff[u2]]
        return text[self.coff[u1] :] + text * (p2 - p1 - 1) + text[: self.coff[u2]]

    def lstrip_len(self, u: int) -> int:
        """Token count of unit ``u`` with leading whitespace removed (the first unit of a haystack)."""
        if not self.starts_space[u]:
            return int(self.off[u + 1] - self.off[u])
        return len(self.encode(self.units[u].lstrip()))

    def encode(self, text: str) -> list[int]:
        """Encode a short text with this corpus' tokenizer (memoized: seams are checked over and over)."""
        hit = self._enc_cache.get(text)
        if hit is None:
            if len(self._enc_cache) > 100_000:
                self._enc_cache.clear()
            hit = self._enc_cache[text] = encode(self.tok, text)
        return hit

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """``[self.encode(t) for t in texts]``, with the texts not yet memoized encoded in one batched call: with
        an HF tokenizer, a batch of a unit's suffixes costs about half of encoding them one by one."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._enc_cache))
        if todo:
            if len(self._enc_cache) + len(todo) > 100_000:
                self._enc_cache.clear()
            self._enc_cache.update(zip(todo, encode_many(self.tok, todo)))
        return [self._enc_cache[t] for t in texts]


_CACHE: dict[tuple[str, str], TokenizedCorpus] = {}


def tokenize_corpus(corpus: Corpus, tok) -> TokenizedCorpus:
    """Cut the corpus into units, tokenize each, merge pairs whose seam does not tokenize independently.
    Cached in memory per (corpus, tokenizer): every cell of a sweep reuses it."""
    tok = as_tokenizer(tok)
    fp = tokenizer_fingerprint(tok)
    key = (corpus.sha256, fp)
    if key in _CACHE:
        _CACHE[key].tok = tok
        return _CACHE[key]
    units, sent = split_units(corpus.text)
    ids = encode_many(tok, units)
    # Check every seam, including the one between the last unit and the first (the pass repeats). Shortcut: if
    # the whole pass encodes to the units' ids back to back, every inner seam is safe.
    n = len(units)
    whole = encode(tok, corpus.text)
    if whole == [t for x in ids for t in x]:
        safe = [True] * (n - 1) + [encode(tok, units[-1] + units[0]) == ids[-1] + ids[0]]
    else:
        pairs = [units[i] + units[(i + 1) % n] for i in range(n)] if n > 1 else [units[0] + units[0]]
        joined = encode_many(tok, pairs)
        safe = [joined[i] == ids[i] + ids[(i + 1) % n] for i in range(n)]
    if not safe[-1]:
        raise YocoEvalError(
            f"haystack {corpus.name}: the end of the text does not tokenize independently of its start under "
            f"{tokenizer_name(tok)}; end the text with a full sentence and a newline"
        )
    m_units: list[str] = []
    m_ids: list[list[int] | None] = []
    m_sent: list[bool] = []
    merged = 0
    i = 0
    while i < n:
        text, tids, s = units[i], ids[i], sent[i]
        while i < n - 1 and not safe[i]:
            i += 1
            text = text + units[i]
            tids = None  # re-encode once after merging
            s = sent[i]
            merged += 1
        m_units.append(text)
        m_ids.append(tids)
        m_sent.append(s)
        i += 1
    redo = [k for k, x in enumerate(m_ids) if x is None]  # merged units: re-encoded once, in one batch
    for k, x in zip(redo, encode_many(tok, [m_units[k] for k in redo])):
        m_ids[k] = x
    if merged > 0.5 * max(n, 1) and n > 20:
        raise YocoEvalError(
            f"tokenizer {tokenizer_name(tok)} does not tokenize sentences independently (e.g. a SentencePiece "
            "tokenizer with a dummy prefix): exact-length prompts are not supported for it yet"
        )
    lens = np.fromiter((len(x) for x in m_ids), dtype=np.int64, count=len(m_ids))
    off = np.zeros(len(m_ids) + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    coff = np.zeros(len(m_units) + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(u) for u in m_units), dtype=np.int64, count=len(m_units)), out=coff[1:])
    flat = np.fromiter((t for x in m_ids for t in x), dtype=np.int64, count=int(off[-1]))
    tc = TokenizedCorpus(
        corpus=corpus,
        tokenizer_fingerprint=fp,
        units=m_units,
        ids=flat,
        off=off,
        coff=coff,
        sentence_end=np.array(m_sent, dtype=bool),
        ends_newline=np.array([u.endswith("\n") for u in m_units], dtype=bool),
        starts_space=np.array([u[:1].isspace() for u in m_units], dtype=bool),
        tok=tok,
        n_merged=merged,
    )
    if tc.n_tokens == 0:
        raise YocoEvalError(f"haystack {corpus.name} tokenizes to 0 tokens: give a haystack with text in it")
    if len(_CACHE) >= 4:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = tc
    return tc
