"""Read a needle run folder (``run.json`` + ``results.jsonl`` + rank shards) into typed rows.

The contract is ``yoco-eval/needle-run/1`` (see ``reports/README.md``). Reading is forgiving: a missing or
corrupt file, a truncated last line or a malformed row becomes a :class:`~yoco_eval.report.problems.Problem`
naming the file and line, and everything readable is still returned.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoco_eval.report.problems import Problem, ProblemLog

RUN_SCHEMA = "yoco-eval/needle-run/1"
_SHARD = re.compile(r"^results\.rank(\d+)\.jsonl$")


@dataclass(frozen=True)
class Needle:
    key: str
    value: str
    text: str
    token_position: int | None
    depth_actual: float | None
    is_target: bool


@dataclass(frozen=True)
class Excerpt:
    token_position: int | None
    before: str
    needle: str
    after: str


@dataclass(frozen=True)
class CellResult:
    """One row of ``results.jsonl``: one trial at one (context length, depth)."""

    cell: str
    context_length: int
    depth_percent: float
    trial: int
    status: str  # "ok" | "error"
    error: str | None
    score: float | None
    seed: int | None = None
    prompt_tokens: int | None = None
    needles: tuple[Needle, ...] = ()
    question: str = ""
    expected: tuple[str, ...] = ()
    output: str | None = None
    metric: str = ""
    duration_s: float | None = None
    prefill_s: float | None = None
    tokens_per_s: float | None = None
    peak_mem_bytes: int | None = None  # CUDA peak during the call (GPU runs only)
    timestamp_utc: str = ""
    rank: int | None = None
    prompt_excerpts: tuple[Excerpt, ...] = ()
    source: str = ""  # "file:line" the row came from
    # cost fields recorded since issue 21 (None in older rows: "not recorded")
    decode_s: float | None = None
    generate_s: float | None = None
    peak_rss_bytes: int | None = None  # the process's resident-set peak during the call (Linux VmHWM)
    kv_bytes_per_token: int | None = None
    reused_prompt_tokens: int | None = None  # prompt tokens continued from a shared prefix, not prefilled

    @property
    def ok(self) -> bool:
        """True when the trial produced a score; errors are never counted as zeros."""
        return self.status == "ok" and self.score is not None


@dataclass
class NeedleRun:
    """A run folder as read from disk: metadata (raw dict, possibly empty), rows and problems."""

    dir: Path
    meta: dict[str, Any]
    cells: list[CellResult]
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.meta.get("run_name") or self.dir.name)

    def get(self, dotted: str) -> Any:
        """``run.get("model.name")`` → the value, or None when any part is missing."""
        cur: Any = self.meta
        for part in dotted.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return None
            cur = cur[part]
        return cur

    @property
    def grid_lengths(self) -> list[int]:
        return _number_list(self.get("grid.lengths"), int)

    @property
    def grid_depths(self) -> list[float]:
        return _number_list(self.get("grid.depths"), float)


def _number_list(value: Any, kind: type) -> list:
    if not isinstance(value, list):
        return []
    out = []
    for v in value:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(kind(v))
    return out


def _display(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def read_json_file(path: Path, log: ProblemLog, shown: str, what: str, fix: str) -> Any:
    """Parse a whole JSON file; on any failure log one problem and return None."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.add(shown, None, f"{what} is missing", fix)
        return None
    except UnicodeDecodeError as e:
        log.add(shown, None, f"not valid UTF-8 (byte {e.start})", "re-save the file as UTF-8 or regenerate it")
        return None
    except OSError as e:
        log.add(shown, None, f"cannot be read ({e.strerror or e})", "check the path and its permissions")
        return None
    if not text.strip():
        log.add(shown, None, "is empty", fix)
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        log.add(shown, e.lineno, f"not valid JSON ({e.msg} at column {e.colno})", fix)
        return None


def iter_jsonl(path: Path, log: ProblemLog, shown: str):
    """Yield ``(line_no, dict)`` for each usable line; log the others (corrupt, truncated, non-object)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        log.add(shown, None, f"cannot be read ({e.strerror or e})", "check the path and its permissions")
        return
    lines = raw.split(b"\n")
    ends_mid_line = bool(raw) and not raw.endswith(b"\n")
    for i, blob in enumerate(lines, start=1):
        if not blob.strip():
            continue
        try:
            text = blob.decode("utf-8")
        except UnicodeDecodeError as e:
            log.add(shown, i, f"not valid UTF-8 (byte {e.start}); line skipped", "delete the line and resume the run")
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            if ends_mid_line and i == len(lines):
                log.add(
                    shown,
                    i,
                    "truncated last line (the writer stopped mid-line); line skipped",
                    "resume the run to redo this cell, or delete the partial line",
                )
            else:
                log.add(
                    shown,
                    i,
                    f"not valid JSON ({e.msg} at column {e.colno}); line skipped",
                    "fix or delete the line, then resume the run to redo the cell",
                )
            continue
        if not isinstance(obj, dict):
            log.add(
                shown,
                i,
                f"expected a JSON object, found {type(obj).__name__}; line skipped",
                "each line must be one result object",
            )
            continue
        yield i, obj


def _opt(row: dict, key: str, kinds: tuple, bad: list[str]) -> Any:
    v = row.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, kinds) or (isinstance(v, float) and not math.isfinite(v)):
        bad.append(key)
        return None
    return v


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def parse_row(row: dict, source: str) -> tuple[CellResult | None, str | None]:
    """Turn one results.jsonl object into a :class:`CellResult`, or explain (second item) why it cannot."""
    missing = [k for k in ("context_length", "depth_percent") if k not in row]
    if missing:
        return None, f"missing required field(s) {', '.join(missing)}; row skipped"
    length, depth = row["context_length"], row["depth_percent"]
    if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
        return None, f"context_length must be a positive integer, got {length!r:.40}; row skipped"
    if not _finite(depth):
        return None, f"depth_percent must be a number, got {depth!r:.40}; row skipped"
    bad: list[str] = []
    trial = _opt(row, "trial", (int,), bad)
    status = row.get("status")
    error = row.get("error")
    score = _opt(row, "score", (int, float), bad)
    if status not in ("ok", "error"):
        error = f"unknown status {status!r:.40} (expected 'ok' or 'error')"
        status = "error"
    elif status == "ok" and score is None:
        status, error = "error", "status is 'ok' but no score was recorded"
    if status == "error":
        score = None
        error = _as_text(error) or "error (no message recorded)"
    else:
        error = None
    needles = []
    for n in row.get("needles") or []:
        if isinstance(n, dict):
            pos, dep = n.get("token_position"), n.get("depth_actual")
            needles.append(
                Needle(
                    key=_as_text(n.get("key")),
                    value=_as_text(n.get("value")),
                    text=_as_text(n.get("text")),
                    token_position=pos if isinstance(pos, int) and not isinstance(pos, bool) else None,
                    depth_actual=float(dep) if _finite(dep) else None,
                    is_target=bool(n.get("is_target", True)),
                )
            )
    excerpts = []
    for x in row.get("prompt_excerpts") or []:
        if isinstance(x, dict):
            pos = x.get("token_position")
            excerpts.append(
                Excerpt(
                    token_position=pos if isinstance(pos, int) and not isinstance(pos, bool) else None,
                    before=_as_text(x.get("before")),
                    needle=_as_text(x.get("needle")),
                    after=_as_text(x.get("after")),
                )
            )
    expected = row.get("expected")
    if isinstance(expected, str):
        expected = [expected]
    cell = CellResult(
        cell=_as_text(row.get("cell")) or f"L{length}_D{depth:g}_T{trial if trial is not None else '?'}",
        context_length=length,
        depth_percent=float(depth),
        trial=trial if trial is not None else 0,
        status=status,
        error=error,
        score=float(score) if score is not None else None,
        seed=_opt(row, "seed", (int,), bad),
        prompt_tokens=_opt(row, "prompt_tokens", (int,), bad),
        needles=tuple(needles),
        question=_as_text(row.get("question")),
        expected=tuple(_as_text(e) for e in expected) if isinstance(expected, list) else (),
        output=_as_text(row["output"]) if row.get("output") is not None else None,
        metric=_as_text(row.get("metric")),
        duration_s=_opt(row, "duration_s", (int, float), bad),
        prefill_s=_opt(row, "prefill_s", (int, float), bad),
        tokens_per_s=_opt(row, "tokens_per_s", (int, float), bad),
        peak_mem_bytes=_opt(row, "peak_mem_bytes", (int,), bad),
        timestamp_utc=_as_text(row.get("timestamp_utc")),
        rank=_opt(row, "rank", (int,), bad),
        prompt_excerpts=tuple(excerpts),
        source=source,
        decode_s=_opt(row, "decode_s", (int, float), bad),
        generate_s=_opt(row, "generate_s", (int, float), bad),
        peak_rss_bytes=_opt(row, "peak_rss_bytes", (int,), bad),
        kv_bytes_per_token=_opt(row, "kv_bytes_per_token", (int,), bad),
        reused_prompt_tokens=_opt(row, "reused_prompt_tokens", (int,), bad),
    )
    note = f"field(s) {', '.join(bad)} have the wrong type and are shown as —" if bad else None
    return cell, note


def result_files(run_dir: Path) -> list[Path]:
    """``results.jsonl`` first, then ``results.rank{r}.jsonl`` shards by rank: the order rows are merged in."""
    shards = []
    if run_dir.is_dir():
        for p in run_dir.iterdir():
            m = _SHARD.match(p.name)
            if m:
                shards.append((int(m.group(1)), p))
    main = run_dir / "results.jsonl"
    return ([main] if main.exists() else []) + [p for _, p in sorted(shards)]


def load_run(run_dir: Path | str, base: Path | None = None) -> NeedleRun:
    """Read a needle run folder.

    Rows from ``results.jsonl`` and every ``results.rank{r}.jsonl`` shard are merged and de-duplicated by
    ``cell``: the row with the latest ``timestamp_utc`` wins, and on a tie (or without timestamps) the row
    read last wins (files in the order of :func:`result_files`, lines in file order).

    Args:
        run_dir: the folder holding ``run.json``.
        base: paths in problem messages are shown relative to this folder (default: the run folder's parent).

    Returns:
        A :class:`NeedleRun`; it never raises for bad content.
    """
    run_dir = Path(run_dir)
    base = run_dir.parent if base is None else base
    log = ProblemLog()
    meta_path = run_dir / "run.json"
    meta = read_json_file(
        meta_path,
        log,
        _display(meta_path, base),
        "run.json",
        "rerun the sweep (it writes run.json first), or restore the file; metadata is shown as —",
    )
    if meta is not None and not isinstance(meta, dict):
        log.add(_display(meta_path, base), None, "expected a JSON object", "restore run.json from the run")
        meta = None
    meta = meta or {}
    schema = meta.get("schema")
    if meta and schema != RUN_SCHEMA:
        log.add(
            _display(meta_path, base),
            None,
            f"schema is {schema!r}, expected {RUN_SCHEMA!r}",
            "regenerate the run with this yoco-eval version; fields are read on a best-effort basis",
        )
    files = result_files(run_dir)
    if not files:
        shown = _display(run_dir / "results.jsonl", base)
        log.add(
            shown,
            None,
            "results.jsonl is missing (no results yet)",
            "run or resume the sweep; the grid is shown as not run",
        )
    best: dict[str, tuple[tuple[str, int], CellResult]] = {}
    order = 0
    for path in files:
        shown = _display(path, base)
        for line_no, obj in iter_jsonl(path, log, shown):
            row, note = parse_row(obj, f"{shown}:{line_no}")
            if note:
                log.add(shown, line_no, note, "fix the row or resume the run to redo the cell")
            if row is None:
                continue
            order += 1
            key = (row.timestamp_utc, order)
            prev = best.get(row.cell)
            if prev is None or key >= prev[0]:
                best[row.cell] = (key, row)
    cells = sorted((r for _, r in best.values()), key=lambda r: (r.context_length, r.depth_percent, r.trial, r.cell))
    return NeedleRun(dir=run_dir, meta=meta, cells=cells, problems=log.items, files=[_display(p, base) for p in files])
