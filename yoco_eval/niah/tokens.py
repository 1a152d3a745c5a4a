"""Tokenizer adapters and the tokenized corpus (tokenized once per tokenizer, reused by every cell).

Exact prompt length rests on one property, checked rather than assumed: when two adjacent units of text are
tokenized separately, the concatenated ids equal the ids of the concatenated text. BPE tokenizers almost always
have it at sentence and line boundaries, but not everywhere (cl100k merges ``".\\n"``; GPT-2-style byte-level
tokenizers split ``"\\n\\n"`` differently before a word than at the end of a string). So after cutting the corpus
into units, every adjacent pair is checked with the actual tokenizer and unsafe pairs are merged into one unit.
The prompt builder then splices token slices and re-checks every new seam it creates (needles, start, end), and
finally re-encodes the whole prompt text once to confirm.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah.corpus import Corpus, split_units

_PROBE = "Needle probe: The quick brown fox, 12345 UUIDs and \u00e9t\u00e9.\n\nNext line."


class TiktokenTokenizer:
    """Adapter giving a bare ``tiktoken.Encoding`` (e.g. ``yoco_eval.tokenizer.cl100k_encoding()``) the project's
    Tokenizer interface."""

    def __init__(self, enc):
        self._enc = enc
        self.name = getattr(enc, "name", "tiktoken")
        self.eos_id = getattr(enc, "eot_token", None)
        self.bos_id = None
        self.pad_id = None
        self.vocab_size = enc.n_vocab

    def encode(self, text: str, bos: bool = False) -> list[int]:
        return self._enc.encode(text, allowed_special="all")

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_batch(texts, allowed_special="all")

    def decode(self, ids) -> str:
        return self._enc.decode(list(ids))


class HFTokenizerAdapter:
    """Adapter for an already-loaded Hugging Face tokenizer (e.g. one loaded from a GGUF file). ``spec`` says how
    to load it again (recorded in run.json for ``reconstruct_prompt``)."""

    def __init__(self, hf_tokenizer, name: str | None = None, spec: dict | None = None):
        self._tok = hf_tokenizer
        self.name = name or f"hf:{getattr(hf_tokenizer, 'name_or_path', 'tokenizer')}"
        self.bos_id = hf_tokenizer.bos_token_id
        self.eos_id = hf_tokenizer.eos_token_id
        self.pad_id = hf_tokenizer.pad_token_id
        self.vocab_size = len(hf_tokenizer)
        self.spec = spec

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False)
        return [self.bos_id, *ids] if bos and self.bos_id is not None else ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._tok(texts, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    @property
    def hf_tokenizer(self):
        return self._tok


def load_hf_tokenizer(path: str, gguf_file: str | None = None) -> HFTokenizerAdapter:
    """A local HF tokenizer folder (optionally from a GGUF file inside it), never from the network."""
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise YocoEvalError("loading a Hugging Face tokenizer needs transformers: pip install 'yoco-eval[hf]'") from e
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        raise YocoEvalError(
            f"cannot load a tokenizer from {path} ({type(e).__name__}): give a local tokenizer "
            "folder (and gguf_file for a GGUF checkpoint)"
        ) from e
    name = f"hf:{Path(path).name}" + (f"/{gguf_file}" if gguf_file else "")
    return HFTokenizerAdapter(hf, name=name, spec={"kind": "hf", "path": str(path), "gguf_file": gguf_file})


def tokenizer_spec(tok) -> dict | None:
    """How to load this tokenizer again, or None when unknown (then reconstruct_prompt needs it passed in)."""
    spec = getattr(tok, "spec", None)
    if isinstance(spec, dict):
        return spec
    name = tokenizer_name(tok)
    if type(tok).__name__ == "YOCOTokenizer":
        return {"kind": "builtin", "name": "yoco-cl100k"}
    if type(tok).__name__ == "ByteTokenizer":
        return {"kind": "builtin", "name": "bytes"}
    if isinstance(tok, TiktokenTokenizer):
        return {"kind": "tiktoken", "name": name}
    return None


def load_tokenizer_spec(spec: dict):
    kind = spec.get("kind")
    if kind == "builtin":
        from yoco_eval.tokenizer import load_tokenizer

        return load_tokenizer(spec["name"])
    if kind == "tiktoken":
        from yoco_eval.tokenizer import cl100k_encoding

        if "cl100k" not in spec.get("name", ""):
            raise YocoEvalError(f"tiktoken encoding {spec.get('name')!r} is not available offline: pass the tokenizer")
        return TiktokenTokenizer(cl100k_encoding())
    if kind == "hf":
        return load_hf_tokenizer(spec["path"], spec.get("gguf_file"))
    raise YocoEvalError(f"unknown tokenizer spec {spec!r}: pass the tokenizer explicitly")


def resolve_tokenizer(name: str):
    """``yoco-cl100k`` (official YOCO), ``cl100k`` (plain tiktoken cl100k_base), ``bytes``, or a folder path
    (``path`` or ``path::file.gguf``)."""
    if name in ("cl100k", "cl100k_base"):
        from yoco_eval.tokenizer import cl100k_encoding

        return TiktokenTokenizer(cl100k_encoding())
    if name in ("yoco-cl100k", "yoco", "bytes"):
        from yoco_eval.tokenizer import load_tokenizer

        return load_tokenizer("yoco-cl100k" if name == "yoco" else name)
    path, _, gguf = name.partition("::")
    p = Path(path)
    if p.is_dir() and (gguf or any(p.glob("*.gguf")) and not (p / "tokenizer.json").exists()):
        gguf = gguf or sorted(x.name for x in p.glob("*.gguf"))[0]
        return load_hf_tokenizer(str(p), gguf)
    if p.is_dir() and ((p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()):
        return load_hf_tokenizer(str(p))
    if p.is_dir() and ((p / "config.json").exists() or (p / "params.json").exists()):
        from yoco_eval.tokenizer import load_tokenizer as load_checkpoint_tokenizer

        return load_checkpoint_tokenizer(p)  # a yoco-eval / official checkpoint folder: the tokenizer its config names
    raise YocoEvalError(f"unknown tokenizer {name!r}: use yoco-cl100k, cl100k, bytes or a tokenizer folder path")


def as_tokenizer(tok: Any):
    """Return ``tok`` if it already has ``encode(text, bos=False)``/``decode``; wrap a tiktoken Encoding."""
    if tok is None:
        raise YocoEvalError("no tokenizer given: pass the model's tokenizer (or --tokenizer for the fake model)")
    if type(tok).__module__.startswith("tiktoken") and hasattr(tok, "encode_ordinary"):
        return TiktokenTokenizer(tok)
    for attr in ("encode", "decode"):
        if not callable(getattr(tok, attr, None)):
            raise YocoEvalError(f"{type(tok).__name__} is not a tokenizer (no {attr}()): pass a yoco_eval tokenizer")
    return tok


def tokenizer_name(tok) -> str:
    return str(getattr(tok, "name", type(tok).__name__))


def encode(tok, text: str) -> list[int]:
    return list(tok.encode(text, bos=False)) if text else []


def _batch_is_slow(tok) -> bool:
    # tiktoken's encode_batch spawns a thread pool per call: slower than a loop for many short texts
    return type(getattr(tok, "_enc", None)).__module__.startswith("tiktoken")


def encode_many(tok, texts: list[str]) -> list[list[int]]:
    batch = getattr(tok, "encode_batch", None)
    if callable(batch) and len(texts) > 1 and not _batch_is_slow(tok):
        return [list(x) for x in batch(texts)]
    return [encode(tok, t) for t in texts]


def tokenizer_fingerprint(tok) -> str:
    """Name plus a hash of the ids of a probe string: two tokenizers with equal fingerprints tokenize alike."""
    ids = encode(tok, _PROBE)
    return f"{tokenizer_name(tok)}:{hashlib.sha256(str(ids).encode()).hexdigest()[:16]}"


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
    m_ids: list[list[int]] = []
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
        m_ids.append(tids if tids is not None else encode(tok, text))
        m_sent.append(s)
        i += 1
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
