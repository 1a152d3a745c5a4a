"""The report index: discover every result under a root, render missing pages, and write ``index.html``.

Discovery is recursive: a folder holding ``run.json`` (or ``results.jsonl`` / rank shards) is a needle run,
``results_*.json`` is an lm-eval results file, ``profile*.json`` is a profile (schema ``yoco-eval/profile/1``),
and ``compare/*.html`` are comparison pages made by ``yoco-eval report ROOT --compare A B``. Hidden folders are
skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoco_eval.report import fmt
from yoco_eval.report.heatmap import HeatmapTable
from yoco_eval.report.lm_eval import load_lm_eval
from yoco_eval.report.load import _SHARD, NeedleRun, load_run
from yoco_eval.report.problems import Problem
from yoco_eval.report.profile import load_profile
from yoco_eval.report.render import (
    COMPARE_DIR,
    INDEX_PAGE,
    LM_EVAL_ALL,
    RUN_PAGE,
    _render_compare,
    _render_lm_eval,
    _render_profile,
    _render_run,
    _write,
    compare_path,
    rel_href,
    render_template,
    score_stops,
)
from yoco_eval.report.views import MiniHeatmap, mini_view, run_table

#: The index links at most this many pairs of runs that share a grid.
MAX_PAIRS = 60


@dataclass
class Found:
    runs: list[Path] = field(default_factory=list)
    lm_eval: list[Path] = field(default_factory=list)
    profiles: list[Path] = field(default_factory=list)
    compares: list[Path] = field(default_factory=list)


def discover(root: Path) -> Found:
    """Everything renderable under ``root``, each list sorted by path."""
    found = Found()
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        d = Path(here)
        if "run.json" in files or "results.jsonl" in files or any(_SHARD.match(f) for f in files):
            found.runs.append(d)  # a run that lost its run.json is still shown (with the problem)
        for f in sorted(files):
            if f.startswith("results_") and f.endswith(".json"):
                found.lm_eval.append(d / f)
            elif f.startswith("profile") and f.endswith(".json"):
                found.profiles.append(d / f)
            elif d == root / COMPARE_DIR and f.endswith(".html"):
                found.compares.append(d / f)
    return found


@dataclass
class Card:
    kind: str  # needle | lm-eval | profile
    id: str
    title: str
    href: str
    subtitle: str
    facts: list[tuple[str, str]]
    sort: dict[str, str]  # keys used by the client-side sort (strings; numbers zero-padded)
    search: str
    score: str
    mini: MiniHeatmap | None
    problems: list[Problem]


def _needle_card(i: int, run: NeedleRun, table: HeatmapTable, href: str) -> Card:
    o = table.overall
    lengths = table.lengths
    facts = [
        ("model", fmt.text(run.get("model.name"))),
        ("haystack", fmt.text(run.get("haystack.name"))),
        ("variant", fmt.text(run.get("variant.name"))),
        (
            "grid",
            f"{len(lengths)} lengths ({fmt.length(lengths[0])}–{fmt.length(lengths[-1])}) × "
            f"{len(table.depths)} depths × {fmt.text(run.get('grid.trials'))} trials"
            if lengths
            else "—",
        ),
        ("trials", f"{o.n_ok:,} ok, {o.n_error:,} failed"),
        ("created", fmt.text(run.get("created_utc"))),
    ]
    search = " ".join([run.name, *(v for _, v in facts), href]).lower()
    return Card(
        kind="needle",
        id=f"r{i}",
        title=run.name,
        href=href,
        subtitle=" · ".join(str(x) for x in (run.get("model.name"), run.get("hardware.name")) if x) or "needle run",
        facts=facts,
        sort={
            "name": run.name.lower(),
            "date": str(run.get("created_utc") or ""),
            "model": str(run.get("model.name") or "").lower(),
            "score": f"{o.mean:.6f}" if o.mean is not None else "",
            "length": f"{lengths[-1]:012d}" if lengths else "",
        },
        search=search,
        score=fmt.pct(o.mean, 1),
        mini=mini_view(table),
        problems=run.problems,
    )


def _matrix(table: HeatmapTable) -> dict[str, Any]:
    return {
        "lengths": list(table.lengths),
        "depths": list(table.depths),
        "cells": [[[c.tally.mean, c.tally.n_ok, c.tally.n_error] for c in row] for row in table.cells],
    }


def render_index(root: Path | str = "reports", *, generated_at: str | None = None) -> Path:
    """Write ``<root>/index.html``: a card per run (needle, lm-eval, profile), sort/filter and comparison.

    Pages the index links to but that do not exist yet are rendered too; ``yoco-eval report`` re-renders all.

    Args:
        root: the reports folder to scan recursively.
        generated_at: optional render-time text (omitted by default: deterministic output).

    Returns:
        The written ``index.html``. Unreadable inputs appear as problems on the page, never as exceptions.
    """
    return _render_index(Path(root), generated_at).path


@dataclass
class IndexResult:
    path: Path
    problems: list[Problem]


def _render_index(root: Path, generated_at: str | None) -> IndexResult:
    root = Path(root)
    found = discover(root)
    index = root / INDEX_PAGE
    cards: list[Card] = []
    problems: list[Problem] = []
    compare_runs = []
    tables: list[tuple[str, NeedleRun, HeatmapTable]] = []
    for i, d in enumerate(found.runs):
        run = load_run(d, root)
        page = d / RUN_PAGE
        if not page.exists():
            _render_run(d, index=index, generated_at=generated_at, base=root)
        table = run_table(run)
        card = _needle_card(i, run, table, rel_href(page, root))
        cards.append(card)
        problems += run.problems
        tables.append((card.id, run, table))
        compare_runs.append({"id": card.id, "name": run.name, "href": card.href, **_matrix(table)})
    for i, p in enumerate(found.lm_eval):
        r = load_lm_eval(p, root)
        page = p.with_suffix(".html")
        if not page.exists():
            _render_lm_eval([p], page, root, generated_at, index)
        tasks = sorted({k[0] for k in r.order})
        first = [
            f"{k[0]} {k[1]}: {fmt.num(v[0], 4) if isinstance(v[0], float) else fmt.text(v[0])}"
            for k, v in list(r.values.items())[:4]
        ]
        facts = [(label, val) for label, val in r.facts if label in ("model", "date", "lm-eval", "samples")]
        facts += [("tasks", f"{len(tasks)}: " + ", ".join(tasks[:6]) + (" …" if len(tasks) > 6 else ""))]
        cards.append(
            Card(
                kind="lm-eval",
                id=f"l{i}",
                title=r.label,
                href=rel_href(page, root),
                subtitle="lm-eval results",
                facts=facts + [("", line) for line in first],
                sort={
                    "name": r.label.lower(),
                    "date": dict(r.facts).get("date", ""),
                    "model": r.label.lower(),
                    "score": "",
                    "length": "",
                },
                search=" ".join([r.label, r.shown, *tasks]).lower(),
                score="",
                mini=None,
                problems=r.problems,
            )
        )
        problems += r.problems
    if len(found.lm_eval) > 1 and not (root / LM_EVAL_ALL).exists():
        _render_lm_eval(found.lm_eval, root / LM_EVAL_ALL, root, generated_at, index)
    for i, p in enumerate(found.profiles):
        prof = load_profile(p, root)
        page = p.with_suffix(".html")
        if not page.exists():
            _render_profile(p, page, root, generated_at, index)
        models = list(dict.fromkeys(r.model for r in prof.rows))
        lengths = sorted({r.context_length for r in prof.rows})
        n_fail = sum(r.status != "ok" for r in prof.rows)
        facts = [
            ("card", fmt.text(prof.meta.get("card"))),
            ("date", fmt.text(prof.meta.get("date"))),
            ("models", fmt.text(models)),
            ("lengths", f"{fmt.length(lengths[0])}–{fmt.length(lengths[-1])}" if lengths else "—"),
            ("rows", f"{len(prof.rows)} ({n_fail} OOM/error)"),
        ]
        cards.append(
            Card(
                kind="profile",
                id=f"p{i}",
                title=prof.title,
                href=rel_href(page, root),
                subtitle="profile",
                facts=facts,
                sort={
                    "name": prof.title.lower(),
                    "date": str(prof.meta.get("date") or ""),
                    "model": " ".join(models).lower(),
                    "score": "",
                    "length": f"{lengths[-1]:012d}" if lengths else "",
                },
                search=" ".join([prof.title, prof.shown, *models]).lower(),
                score="",
                mini=None,
                problems=prof.problems,
            )
        )
        problems += prof.problems
    pairs = []
    for x in range(len(tables)):
        for y in range(x + 1, len(tables)):
            (ia, ra, ta), (ib, rb, tb) = tables[x], tables[y]
            if ta.lengths and ta.lengths == tb.lengths and ta.depths == tb.depths and len(pairs) < MAX_PAIRS:
                pairs.append((ia, ib, f"{ra.name} vs {rb.name}"))
    compares = [(rel_href(p, root), p.stem.replace("__vs__", " vs ")) for p in found.compares]
    html = render_template(
        "index.html.j2",
        root_name=root.resolve().name,
        cards=cards,
        pairs=pairs,
        compares=compares,
        has_lm_all=(root / LM_EVAL_ALL).exists(),
        problems=problems,
        data={"runs": compare_runs, "stops": score_stops()},
        generated_at=generated_at,
    )
    return IndexResult(_write(index, html), problems)


@dataclass
class Summary:
    pages: list[Path]
    index: Path | None
    problems: list[Problem]


def render_all(
    root: Path | str, compare: list[tuple[Path, Path]] = (), *, generated_at: str | None = None, with_index: bool = True
) -> Summary:
    """Re-render every page under ``root`` from the results files alone, then the index.

    Args:
        root: reports folder.
        compare: pairs of run folders; each gets ``<root>/compare/<A>__vs__<B>.html``.
        generated_at: optional render-time text.
        with_index: also write ``<root>/index.html``.
    """
    root = Path(root)
    found = discover(root)
    index = root / INDEX_PAGE if with_index else None
    pages, problems = [], []
    for d in found.runs:
        r = _render_run(d, index=index, generated_at=generated_at, base=root)
        pages.append(r.path)
        problems += r.problems
    for p in found.lm_eval:
        r = _render_lm_eval([p], p.with_suffix(".html"), root, generated_at, index)
        pages.append(r.path)
        problems += r.problems
    if len(found.lm_eval) > 1:
        pages.append(_render_lm_eval(found.lm_eval, root / LM_EVAL_ALL, root, generated_at, index).path)
    for p in found.profiles:
        r = _render_profile(p, p.with_suffix(".html"), root, generated_at, index)
        pages.append(r.path)
        problems += r.problems
    for a, b in compare:
        r = _render_compare(Path(a), Path(b), compare_path(root, a, b), generated_at, index)
        pages.append(r.path)
        if not all(Path(x).resolve() in {d.resolve() for d in found.runs} for x in (a, b)):
            problems += r.problems  # runs outside the root were not reported above
    if not with_index:
        return Summary(pages, None, problems)
    idx = _render_index(root, generated_at)
    return Summary(pages, idx.path, problems)
