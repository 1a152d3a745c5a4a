"""The report index: discover every result under a root and write ``index.html`` linking to their pages.

Discovery is recursive: a folder holding ``run.json`` (or ``results.jsonl`` / rank shards) is a needle run,
``results_*.json`` is an lm-eval results file, ``profile*.json`` is a profile (schema ``yoco-eval/profile/1``),
and ``compare/*.html`` are comparison pages made by ``yoco-eval report ROOT --compare A B``. Hidden folders are
skipped, and so is every subfolder that holds its own ``index.html`` (a separate report tree, such as
``reports/examples``): the index links to that tree's index instead of listing, or re-rendering, its pages.

Writing the index writes one file. It never renders other runs' pages: a run without a page gets a card that
says how to render it. :func:`render_all` (``yoco-eval report DIR``) renders the pages of DIR's own tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoco_eval.report import fmt
from yoco_eval.report.cards import Card, collapse, grid_text, needle_card, newest_first, option_labels
from yoco_eval.report.heatmap import HeatmapTable
from yoco_eval.report.lm_eval import load_lm_eval
from yoco_eval.report.load import _SHARD, load_run
from yoco_eval.report.nll import _render_nll, nll_card
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
from yoco_eval.report.views import run_table

#: The index lists at most this many groups of runs that share a grid.
MAX_GRID_GROUPS = 8
#: An NLL run folder holds this file (``yoco-eval nll``); its page is ``report.html`` next to it.
NLL_RESULTS = "nll.jsonl"
#: With two or more NLL runs under a root, every one of them overlaid on one page.
NLL_ALL = "nll.html"


@dataclass
class Found:
    runs: list[Path] = field(default_factory=list)
    lm_eval: list[Path] = field(default_factory=list)
    profiles: list[Path] = field(default_factory=list)
    compares: list[Path] = field(default_factory=list)
    nll: list[Path] = field(default_factory=list)  # folders with nll.jsonl (and no needle run)
    trees: list[Path] = field(default_factory=list)  # subfolders with their own index.html (not descended)


def discover(root: Path) -> Found:
    """Everything renderable under ``root``, each list sorted by path; nested report trees are listed, not entered."""
    found = Found()
    for here, dirs, files in os.walk(root):
        d = Path(here)
        keep = []
        for name in sorted(dirs):
            if name.startswith(".") or name == "__pycache__":
                continue
            if (d / name / INDEX_PAGE).is_file():
                found.trees.append(d / name)
            else:
                keep.append(name)
        dirs[:] = keep
        if "run.json" in files or "results.jsonl" in files or any(_SHARD.match(f) for f in files):
            found.runs.append(d)  # a run that lost its run.json is still shown (with the problem)
        elif NLL_RESULTS in files:
            found.nll.append(d)
        for f in sorted(files):
            if f.startswith("results_") and f.endswith(".json"):
                found.lm_eval.append(d / f)
            elif f.startswith("profile") and f.endswith(".json"):
                found.profiles.append(d / f)
            elif d == root / COMPARE_DIR and f.endswith(".html"):
                found.compares.append(d / f)
    return found


def _matrix(table: HeatmapTable) -> dict[str, Any]:
    return {
        "lengths": list(table.lengths),
        "depths": list(table.depths),
        "cells": [[[c.tally.mean, c.tally.n_ok, c.tally.n_error] for c in row] for row in table.cells],
    }


def render_index(root: Path | str = "reports", *, generated_at: str | None = None) -> Path:
    """Write ``<root>/index.html``: a card per run (needle, lm-eval, profile), sort/filter and comparison.

    Writes that one file only: pages are linked where they exist, never rendered here (a run without a page
    gets a card naming the command that renders it).

    Args:
        root: the reports folder to scan recursively (nested trees with their own index.html are linked).
        generated_at: optional render-time text (omitted by default: deterministic output).

    Returns:
        The written ``index.html``. Unreadable inputs appear as problems on the cards, never as exceptions.
    """
    return _render_index(Path(root), generated_at).path


def render_run_and_index(run_dir: Path | str, index_path: Path | str | None = None) -> tuple[Path, Path | None]:
    """What a finished sweep calls: ``<run_dir>/report.html``, then the one index it was asked to update.

    Args:
        run_dir: the run folder (``--out``); only its ``report.html`` is written there.
        index_path: the ``index.html`` to (re)write, listing everything under its folder; None: no index.

    Returns:
        ``(report page, index page or None)``. Nothing else is created or rewritten.
    """
    run_dir = Path(run_dir)
    index = Path(index_path) if index_path is not None else None
    page = _render_run(run_dir, index=index, base=run_dir.parent).path
    if index is None:
        return page, None
    return page, _render_index(index.parent, None, name=index.name).path


@dataclass
class IndexResult:
    path: Path
    problems: list[Problem]


def _page(path: Path, root: Path) -> str | None:
    return rel_href(path, root) if path.is_file() else None


def _lm_eval_card(i: int, p: Path, root: Path) -> Card:
    r = load_lm_eval(p, root)
    tasks = sorted({k[0] for k in r.order})
    first = [
        f"{k[0]} {k[1]}: {fmt.num(v[0], 4) if isinstance(v[0], float) else fmt.text(v[0])}"
        for k, v in list(r.values.items())[:4]
    ]
    facts = [(label, val) for label, val in r.facts if label in ("model", "date", "lm-eval", "samples")]
    facts += [("tasks", f"{len(tasks)}: " + ", ".join(tasks[:6]) + (" …" if len(tasks) > 6 else ""))]
    return Card(
        kind="lm-eval",
        id=f"l{i}",
        title=r.label,
        href=_page(p.with_suffix(".html"), root),
        where=rel_href(p, root),
        subtitle="lm-eval results",
        facts=facts + [("", line) for line in first],
        sort={"name": r.label.lower(), "date": dict(r.facts).get("date", ""), "model": r.label.lower()},
        search=" ".join([r.label, r.shown, *tasks]).lower(),
        score="",
        mini=None,
        problems=r.problems,
    )


def _profile_card(i: int, p: Path, root: Path) -> Card:
    prof = load_profile(p, root)
    models = list(dict.fromkeys(r.model for r in prof.rows))
    lengths = sorted({r.context_length for r in prof.rows})
    n_fail = sum(r.status != "ok" for r in prof.rows)
    ends = fmt.length_labels([lengths[0], lengths[-1]]) if lengths else []
    facts = [
        ("card", fmt.text(prof.meta.get("card"))),
        ("date", fmt.text(prof.meta.get("date"))),
        ("models", fmt.text(models)),
        ("lengths", f"{ends[0]}–{ends[1]}" if lengths else "—"),
        ("rows", f"{len(prof.rows)} ({n_fail} OOM/error)"),
    ]
    return Card(
        kind="profile",
        id=f"p{i}",
        title=prof.title,
        href=_page(p.with_suffix(".html"), root),
        where=rel_href(p, root),
        subtitle="profile (random weights: time and memory)",
        facts=facts,
        sort={
            "name": prof.title.lower(),
            "date": str(prof.meta.get("date") or ""),
            "model": " ".join(models).lower(),
            "length": f"{lengths[-1]:012d}" if lengths else "",
        },
        search=" ".join([prof.title, prof.shown, *models]).lower(),
        score="",
        mini=None,
        problems=prof.problems,
        speed=True,
    )


def _grid_groups(cards: list[Card], tables: dict[str, HeatmapTable]) -> list[dict[str, Any]]:
    """Runs that share a grid, one entry per grid (newest two pre-selected): not one link per pair."""
    groups: dict[tuple, list[Card]] = {}
    for c in cards:
        t = tables.get(c.id)
        if t is not None and t.lengths:
            groups.setdefault((t.lengths, t.depths), []).append(c)
    out = []
    for members in groups.values():
        if len(members) >= 2:
            t = tables[members[0].id]
            out.append({"grid": grid_text(t), "a": members[0].id, "b": members[1].id, "n": len(members)})
    return out[:MAX_GRID_GROUPS]


def _render_index(root: Path, generated_at: str | None, name: str = INDEX_PAGE) -> IndexResult:
    root = Path(root)
    found = discover(root)
    index = root / name
    cards: list[Card] = []
    tables: dict[str, HeatmapTable] = {}
    for i, d in enumerate(found.runs):
        run = load_run(d, root)
        table = run_table(run)
        card = needle_card(i, run, table, _page(d / RUN_PAGE, root), rel_href(d, root))
        cards.append(card)
        tables[card.id] = table
    cards += [_lm_eval_card(i, p, root) for i, p in enumerate(found.lm_eval)]
    cards += [_profile_card(i, p, root) for i, p in enumerate(found.profiles)]
    cards += [nll_card(i, d, root, _page(d / RUN_PAGE, root), rel_href(d, root)) for i, d in enumerate(found.nll)]
    cards = collapse(newest_first(cards))
    main = [c for c in cards if not c.speed]
    speed = [c for c in cards if c.speed]
    needle = [c for c in main if c.kind == "needle"]
    labels = option_labels(needle)
    runs = [
        {"id": c.id, "name": c.title, "label": labels[c.id], "href": c.href, **_matrix(tables[c.id])} for c in needle
    ]
    compares = [(rel_href(p, root), p.stem.replace("__vs__", " vs ")) for p in found.compares]
    trees = [(rel_href(t / INDEX_PAGE, root), rel_href(t, root)) for t in found.trees]
    html = render_template(
        "index.html.j2",
        root_name=root.resolve().name,
        main=main,
        speed=speed,
        n_cards=len(cards),
        groups=_grid_groups(needle, tables),
        compares=compares,
        trees=trees,
        has_lm_all=(root / LM_EVAL_ALL).exists(),
        has_nll_all=(root / NLL_ALL).exists() and len(found.nll) > 1,
        data={"runs": runs, "stops": score_stops()},
        generated_at=generated_at,
    )
    return IndexResult(_write(index, html), [p for c in cards for p in c.problems])


def _existing_compares(root: Path, found: Found) -> list[tuple[Path, Path]]:
    """The run pairs behind ``compare/*.html`` pages already in the tree, so a re-render keeps them current."""
    by_page: dict[Path, list[tuple[Path, Path]]] = {}
    for group in (found.runs, found.nll) if found.compares else ():
        for a in group:
            for b in group:
                if a != b:
                    by_page.setdefault(compare_path(root, a, b), []).append((a, b))
    return [by_page[p][0] for p in found.compares if len(by_page.get(p, [])) == 1]


def _rebase(problems: list[Problem], base: Path, root: Path) -> list[Problem]:
    """Problems whose paths are relative to ``base``, re-expressed relative to ``root`` (for the command's lines)."""
    return [Problem(os.path.relpath(base / p.path, root), p.line, p.message, p.fix) for p in problems]


def is_nll_run(folder: Path) -> bool:
    """A ``yoco-eval nll`` run folder: it holds ``nll.jsonl`` and is not a needle run."""
    return (folder / NLL_RESULTS).is_file() and not (folder / "run.json").is_file()


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
    # Back-links go to the root's index: the one written now, or (with_index=False) the one already there.
    index = root / INDEX_PAGE if with_index or (root / INDEX_PAGE).is_file() else None
    pages, problems = [], []
    # Each page shows paths relative to its own folder, so its bytes do not depend on which root rendered it.
    for d in found.runs:
        r = _render_run(d, index=index, generated_at=generated_at, base=d.parent)
        pages.append(r.path)
        problems += _rebase(r.problems, d.parent, root)
    for p in found.lm_eval:
        r = _render_lm_eval([p], p.with_suffix(".html"), p.parent, generated_at, index)
        pages.append(r.path)
        problems += _rebase(r.problems, p.parent, root)
    if len(found.lm_eval) > 1:
        pages.append(_render_lm_eval(found.lm_eval, root / LM_EVAL_ALL, root, generated_at, index).path)
    for p in found.profiles:
        r = _render_profile(p, p.with_suffix(".html"), p.parent, generated_at, index)
        pages.append(r.path)
        problems += _rebase(r.problems, p.parent, root)
    for d in found.nll:
        path, probs = _render_nll([d], d / RUN_PAGE, generated_at, index)
        pages.append(path)
        problems += _rebase(probs, d, root)  # the page names its files relative to its own folder
    if len(found.nll) > 1:
        names = [rel_href(d, root) for d in found.nll]
        path, _ = _render_nll(found.nll, root / NLL_ALL, generated_at, index, "NLL by position: every run",
                              [f"{n}: " for n in names])  # fmt: skip
        pages.append(path)
    compare = list(compare) + [p for p in _existing_compares(root, found) if p not in compare]
    for a, b in compare:
        out = compare_path(root, a, b)
        if is_nll_run(Path(a)) and is_nll_run(Path(b)):
            title = f"A: {Path(a).resolve().name} vs B: {Path(b).resolve().name} (NLL by position)"
            path, probs = _render_nll([a, b], out, generated_at, index, title, ["A: ", "B: "])
            pages.append(path)
            continue
        r = _render_compare(Path(a), Path(b), out, generated_at, index)
        pages.append(r.path)
        if not all(Path(x).resolve() in {d.resolve() for d in found.runs} for x in (a, b)):
            problems += r.problems  # runs outside the root were not reported above
    if not with_index:
        return Summary(pages, None, problems)
    idx = _render_index(root, generated_at)
    return Summary(pages, idx.path, problems)
