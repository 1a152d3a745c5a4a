"""The run folder on disk: ``run.json`` and the crash-safe ``results.jsonl``.

Layout (read by the report renderer; keep it)::

    <out>/run.json                      what was run (schema yoco-eval/needle-run/1), written atomically
    <out>/results.jsonl                 one JSON object per line, one line per cell
    <out>/results.rank{r}.jsonl         per-rank shards while a torchrun sweep is in flight
    <out>/results.jsonl.torn-<utc>      bytes set aside by a repair (a torn or unreadable line), for inspection

Each result line is written with one ``write`` to an ``O_APPEND`` file and ``fsync``-ed, so a crash (even SIGKILL,
power loss, a full disk) leaves at most one torn line, the last. Results are read as BYTES: a line that is cut
anywhere (also inside a multi-byte UTF-8 character) or otherwise unreadable is skipped and reported, never a
``UnicodeDecodeError``. Reading never writes; :func:`repair` (run before appending) moves such lines aside to a
named file and leaves only whole lines, so the cells they held are simply run again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from yoco_eval.errors import YocoEvalError
from yoco_eval.runinfo import utc_now

RESULTS = "results.jsonl"
RUN_JSON = "run.json"
SHARD_GLOB = "results.rank*.jsonl"


@dataclass
class JsonlRead:
    """What :func:`read_results` found: the rows, and the lines it could not use (``(line number, bytes,
    why)``; line numbers count from 1; the last may be a torn line without its newline)."""

    rows: list[dict] = field(default_factory=list)
    dropped: list[tuple[int, bytes, str]] = field(default_factory=list)
    aside: Path | None = None  # where repair() moved the dropped lines

    def describe(self, path) -> str:
        """One line saying what was dropped (empty when nothing was)."""
        if not self.dropped:
            return ""
        parts = [f"line {n} ({len(b)} bytes, {why})" for n, b, why in self.dropped]
        where = f", moved to {self.aside.name}" if self.aside else ""
        n = len(self.dropped)
        return f"{path}: dropped {n} unreadable line(s): {', '.join(parts)}{where}; their cells run again"


def _parse_line(raw: bytes):
    """A result row from one line's bytes, or the reason it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid UTF-8"
    try:
        row = json.loads(text)
    except json.JSONDecodeError:
        return None, "not complete JSON"
    if not isinstance(row, dict) or "cell" not in row:
        return None, "not a result row"
    return row, ""


def read_results(path) -> JsonlRead:
    """Read a results file as bytes, keeping every whole, valid row. Writes nothing. A final line without its
    newline is kept when it is a whole row (the crash came between the row and its newline)."""
    path = Path(path)
    out = JsonlRead()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    lines = data.split(b"\n")
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        row, why = _parse_line(raw)
        if row is not None:
            out.rows.append(row)
        else:
            torn = n == len(lines)  # no newline after it: the write was cut
            out.dropped.append((n, raw, f"torn last line, {why}" if torn else why))
    return out


def read_jsonl(path) -> list[dict]:
    """The valid rows of a results file (see :func:`read_results` for what is skipped and why)."""
    return read_results(path).rows


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``path`` whole or not at all (a temp file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _row_bytes(row: dict) -> bytes:
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")


def repair(path) -> JsonlRead:
    """Make ``path`` hold only whole rows before appending to it: unreadable lines (a torn last line, a corrupt
    one) are appended to ``<name>.torn-<utc>`` beside it and the file is rewritten atomically without them; a
    whole last row missing its newline gets it back. Returns what was read (``dropped`` says what moved)."""
    path = Path(path)
    got = read_results(path)
    if not path.exists():
        return got
    data = path.read_bytes()
    if got.dropped:
        aside = path.with_name(f"{path.name}.torn-{utc_now().replace(':', '').replace('-', '')}")
        with open(aside, "ab") as f:
            f.write(b"".join(raw + b"\n" for _, raw, _ in got.dropped))
            f.flush()
            os.fsync(f.fileno())
        bad = {n for n, _, _ in got.dropped}
        keep = [raw for n, raw in enumerate(data.split(b"\n"), 1) if n not in bad and raw.strip()]
        atomic_write(path, b"".join(raw + b"\n" for raw in keep))  # the good lines byte for byte
        got.aside = aside
    elif data and not data.endswith(b"\n"):
        atomic_write(path, data + b"\n")
    return got


class JsonlAppender:
    """Appends one JSON object per line; each line is a single write, flushed and fsync-ed. Opening repairs the
    file first (:func:`repair`); ``repaired`` holds what that found."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.repaired = repair(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, row: dict) -> None:
        view = memoryview(_row_bytes(row))
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def results_files(run_dir: Path) -> list[Path]:
    """``results.jsonl`` and the rank shards, in the order their rows are merged."""
    return [Path(run_dir) / RESULTS, *sorted(Path(run_dir).glob(SHARD_GLOB))]


def load_results(run_dir, notes: list[str] | None = None) -> list[dict]:
    """All result rows of a run folder: results.jsonl plus any shards, one row per cell (ok beats error).
    ``notes``: gets one line per file that had unreadable lines (nothing is written)."""
    best: dict[str, dict] = {}
    for f in results_files(Path(run_dir)):
        got = read_results(f)
        if got.dropped and notes is not None:
            notes.append(got.describe(f))
        for r in got.rows:
            prev = best.get(r["cell"])
            if prev is None or (prev.get("status") != "ok" and r.get("status") == "ok"):
                best[r["cell"]] = r
    return list(best.values())


def merge(run_dir: Path, order: dict[str, int], drop_errors: bool = False) -> int:
    """Rewrite results.jsonl with every cell once (grid order), fold in and delete shard files. Unreadable lines
    are set aside first (:func:`repair`), never lost silently."""
    for f in results_files(run_dir):
        if f.exists():
            repair(f)
    rows = load_results(run_dir)
    if drop_errors:
        rows = [r for r in rows if r.get("status") == "ok"]
    rows.sort(key=lambda r: (order.get(r["cell"], len(order)), r["cell"]))
    atomic_write(Path(run_dir) / RESULTS, b"".join(_row_bytes(r) for r in rows))
    for shard in Path(run_dir).glob(SHARD_GLOB):
        shard.unlink()
    return len(rows)


def read_run_json(run_dir) -> dict | None:
    """``run.json`` of a folder (None when there is none); a corrupt one is a one-line error."""
    p = Path(run_dir) / RUN_JSON
    try:
        meta = json.loads(p.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError alike
        raise YocoEvalError(f"{p} is corrupt ({type(e).__name__}): pass another --out, or --overwrite") from e
    if not isinstance(meta, dict):
        raise YocoEvalError(f"{p} is not a run description: pass another --out, or --overwrite")
    return meta


def write_run_json(run_dir, meta: dict) -> None:
    atomic_write(Path(run_dir) / RUN_JSON, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def clear_run(run_dir) -> None:
    """``--overwrite``: delete the files a needle run writes (run.json, results, shards, report.html), nothing
    else in the folder."""
    run_dir = Path(run_dir)
    for f in [run_dir / RUN_JSON, *results_files(run_dir), run_dir / "report.html"]:
        if f.is_file():
            f.unlink()
