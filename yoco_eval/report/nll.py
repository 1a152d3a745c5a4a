"""The NLL-by-position page: cumulative average NLL against position (log x), every model overlaid, per corpus.

Input: one or more ``nll.jsonl`` files written by :mod:`yoco_eval.nll.run` (or their run folders). Output: one
self-contained HTML page (inline CSS and SVG, no scripts, no network) with, for each corpus, the cumulative average
NLL curve (the paper's Figure 6) and the mean NLL of each octave of position, then a table of every (model, corpus)
line and a table of the octave buckets. Everything read from the files is escaped by the template engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from yoco_eval.report import fmt
from yoco_eval.report.charts import LineChart, line_chart
from yoco_eval.report.problems import ProblemLog

SCHEMA = "yoco-eval/nll/1"


@dataclass
class NllPage:
    rows: list[dict]  # ok and error lines, sorted by (corpus, model)
    corpora: list[str]
    charts: list[tuple[str, LineChart, LineChart]]  # (corpus, cumulative chart, bucket chart)
    bucket_table: list[tuple[str, list[str], list[tuple[str, list[str]]]]]  # (corpus, headers, [(model, cells)])
    problems: list


def load_rows(
    paths: Sequence[str | Path], log: ProblemLog, prefixes: Sequence[str] = (), base: Path | None = None
) -> list[dict]:
    """Every readable line of the given files (folders mean their ``nll.jsonl``); the last line of a
    (model, corpus, tokens) pair wins, as in :func:`yoco_eval.nll.run.read_results`. ``prefixes``: one per path,
    put before each model's name (``A: ``), so that the same model in two runs stays two lines. ``base``: problems
    name files relative to this folder (a page's own), so a page does not depend on where it was rendered from."""
    rows: dict[tuple, dict] = {}
    for k, p in enumerate(paths):
        p = Path(p)
        f_read = p / "nll.jsonl" if p.is_dir() else p
        f = Path(os.path.relpath(f_read, base)) if base is not None else f_read  # as problems name it
        if not f_read.is_file():
            log.add(f, None, "file not found", "point at an nll.jsonl or its run folder")
            continue
        prefix = prefixes[k] if k < len(prefixes) else ""
        for i, line in enumerate(f_read.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.add(f, i, "not valid JSON (a torn line?)", "rerun the command to redo that pair")
                continue
            if not isinstance(row, dict) or row.get("schema") != SCHEMA:
                log.add(f, i, f"not a {SCHEMA} line", "give the nll.jsonl written by `yoco-eval nll`")
                continue
            if prefix:
                row = {**row, "model": f"{prefix}{row.get('model')}"}
            rows[(str(row.get("model")), str(row.get("corpus")), row.get("n_tokens"))] = row
    return sorted(rows.values(), key=lambda r: (str(r.get("corpus")), str(r.get("model")), r.get("n_tokens") or 0))


def _tip(model: str, what: str, pos: int, nll: float) -> str:
    return f"{model}: {what} {nll:.4f} nats at {pos:,} tokens"


def corpus_charts(corpus: str, rows: list[dict]) -> tuple[LineChart, LineChart]:
    """The cumulative-average chart and the per-octave chart of one corpus (one series per model)."""
    cum, octv = [], []
    for r in rows:
        name = f"{r['model']} ({(r.get('document') or {}).get('tokenizer', '?')})"
        cum.append((name, [(p, y, _tip(str(r["model"]), "cumulative avg", p, y)) for p, y in r["cumulative"]]))
        octv.append((name, [(b["hi"], b["nll"], _tip(str(r["model"]), f"mean over [{b['lo']:,}, {b['hi']:,})",
                                                     b["hi"], b["nll"])) for b in r["log_buckets"]]))  # fmt: skip
    common = dict(x_label="position (tokens, log scale)", x_format=fmt.length, y_format=lambda v: f"{v:g}",
                  x_log=True, width=560, height=300)  # fmt: skip
    return (
        line_chart(f"{corpus}: cumulative average NLL", cum, y_label="NLL (nats/token)", **common),
        line_chart(f"{corpus}: mean NLL per octave (at its end)", octv, y_label="NLL (nats/token)", **common),
    )


def bucket_table(rows: list[dict]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Octave buckets as columns (the union of all rows' edges), models as rows."""
    spans = sorted({(b["lo"], b["hi"]) for r in rows for b in r["log_buckets"]})
    headers = [f"{fmt.length(lo)}–{fmt.length(hi)}" for lo, hi in spans]
    body = []
    for r in rows:
        by = {(b["lo"], b["hi"]): b["nll"] for b in r["log_buckets"]}
        body.append((str(r["model"]), [f"{by[s]:.3f}" if s in by else "" for s in spans]))
    return headers, body


_TABLE_KEYS = ("model", "corpus", "n_tokens", "status", "nll_mean", "bits_per_byte", "tokens_per_s", "chunk", "device",
               "dtype", "peak_mem_bytes", "cache_bytes", "error")  # fmt: skip


def table_row(r: dict) -> dict:
    """A result line with every column the table shows (None where an error line has none)."""
    row = {k: r.get(k) for k in _TABLE_KEYS}
    doc = r.get("document")
    row["tokenizer"] = doc.get("tokenizer") if isinstance(doc, dict) else None
    cum = [c for c in r.get("cumulative") or [] if c[0] >= 16]  # the first few tokens are too noisy to mark
    best = min(cum, key=lambda c: c[1]) if cum else None
    row["best_pos"], row["best_nll"] = (best[0], best[1]) if best else (None, None)
    return row


def build_page(paths: Sequence[str | Path], prefixes: Sequence[str] = (), base: Path | None = None) -> NllPage:
    log = ProblemLog()
    rows = load_rows(paths, log, prefixes, base)
    corpora = sorted({str(r.get("corpus")) for r in rows})
    charts, tables = [], []
    for c in corpora:
        ok = [r for r in rows if str(r.get("corpus")) == c and r.get("status") == "ok"]
        if ok:
            charts.append((c, *corpus_charts(c, ok)))
            tables.append((c, *bucket_table(ok)))
    return NllPage([table_row(r) for r in rows], corpora, charts, tables, log.items)


def render_nll(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    generated_at: str | None = None,
    index: Path | None = None,
    title: str | None = None,
    prefixes: Sequence[str] = (),
) -> Path:
    """Render the NLL page of the given ``nll.jsonl`` files (or run folders) to ``out``; returns ``out``.

    ``index``: the index page to link back to; ``title``: the page heading (default "NLL by position");
    ``prefixes``: one per path, put before its models' names (a comparison of runs: ``A: ``, ``B: ``)."""
    return _render_nll(paths, Path(out), generated_at, index, title, prefixes)[0]


def _render_nll(paths, out: Path, generated_at=None, index=None, title=None, prefixes=()) -> tuple[Path, list]:
    from yoco_eval.report.render import _write, rel_href, render_template

    page = build_page(paths, prefixes, out.parent)
    html = render_template(
        "nll.html.j2",
        page=page,
        title=title or "NLL by position",
        problems=page.problems,
        index_href=rel_href(index, out.parent) if index else None,
        generated_at=generated_at,
    )
    return _write(out, html), page.problems


def is_random(row: dict) -> bool:
    """A line scored with a preset's seeded random weights: ``random_weights`` if recorded, else a model path
    that is a preset name (``yoco-3b``), which ``yoco-eval nll`` builds with random weights."""
    from yoco_eval.config import CONFIGS

    flag = row.get("random_weights")
    return flag if isinstance(flag, bool) else str(row.get("model_path")) in CONFIGS


def nll_card(i: int, folder: Path, root: Path, href: str | None, where: str):
    """The index card of an NLL run folder: its models (random-weight ones labelled), corpora, length, and each
    (model, corpus) line's mean NLL and bits per byte."""
    from yoco_eval.report.cards import Card

    log = ProblemLog()
    rows = load_rows([folder], log, base=root)
    models = list(dict.fromkeys(str(r.get("model")) for r in rows))
    random = {str(r.get("model")) for r in rows if is_random(r)}
    corpora = sorted({str(r.get("corpus")) for r in rows})
    tokens = sorted({r.get("n_tokens") for r in rows if isinstance(r.get("n_tokens"), int)})
    n_err = sum(r.get("status") != "ok" for r in rows)
    lines = [
        f"{r['model']} on {r['corpus']}: {fmt.num(r.get('nll_mean'), 3)} nats, {fmt.num(r.get('bits_per_byte'), 3)} "
        "bits/byte"
        for r in rows
        if r.get("status") == "ok"
    ]
    facts = [
        ("models", ", ".join(m + (" (random weights)" if m in random else "") for m in models) or fmt.DASH),
        ("corpora", ", ".join(corpora) or fmt.DASH),
        ("tokens", ", ".join(fmt.length(t) for t in tokens) or fmt.DASH),
        ("lines", f"{len(rows) - n_err} ok, {n_err} failed"),
        ("device", fmt.text(sorted({f"{r.get('device')} {r.get('dtype')}" for r in rows}))),
        ("folder", where),
    ] + [("", line) for line in lines[:6]]
    title = folder.resolve().name
    speed = bool(models) and random == set(models)
    overlaid = f"{len(models)} models overlaid" if len(models) > 1 else "1 model"
    return Card(
        kind="nll",
        id=f"n{i}",
        title=title,
        href=href,
        where=where,
        subtitle=f"NLL by position · {overlaid}" + (f" · {', '.join(corpora)}" if corpora else ""),
        facts=facts,
        sort={
            "name": title.lower(),
            "date": "",
            "model": " ".join(models).lower(),
            "length": f"{tokens[-1]:012d}" if tokens else "",
        },  # fmt: skip
        search=" ".join([title, where, *models, *corpora, "nll"]).lower(),
        score="",
        mini=None,
        problems=log.items,
        speed=speed,
    )
