"""Rendering: one strict jinja2 Environment, and the functions that write each kind of page.

Every page is a single self-contained HTML file: CSS, SVG, data and scripts are inline, and the only links
are ``#`` anchors and relative links between report pages. Output is deterministic (sorted inputs, no render
time unless ``generated_at`` is passed), so pages can be snapshot-tested and diffed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

import yoco_eval
from yoco_eval.report import fmt
from yoco_eval.report.cards import random_weights
from yoco_eval.report.cost import MARKS, compare_costs, length_costs, memory_note
from yoco_eval.report.effective import EffectiveLength, effective_length
from yoco_eval.report.heatmap import DIFF_STOPS, SCORE_STOPS, diff_heatmaps
from yoco_eval.report.lm_eval import LmEvalRun, lm_eval_table, load_lm_eval
from yoco_eval.report.load import NeedleRun, load_run
from yoco_eval.report.problems import Problem
from yoco_eval.report.profile import load_profile, profile_charts
from yoco_eval.report.views import (
    MAX_ERROR_ROWS,
    accuracy_charts,
    cell_key,
    diff_view,
    drill_data,
    failed_rows,
    heatmap_view,
    metadata_rows,
    run_subtitle,
    run_table,
)

RUN_PAGE = "report.html"
INDEX_PAGE = "index.html"
COMPARE_DIR = "compare"
LM_EVAL_ALL = "lm-eval.html"


def json_script(data: Any) -> Markup:
    """JSON for a ``<script type="application/json">`` block, safe against breaking out of the element.

    ``<``, ``>`` and ``&`` become ``\\u003c``/``\\u003e``/``\\u0026`` (so neither ``</script>`` nor ``<!--`` can
    appear), and U+2028/U+2029 are escaped. ``JSON.parse`` restores the exact text.
    """
    s = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(a, b)
    return Markup(s)


def _make_env() -> Environment:
    env = Environment(
        loader=PackageLoader("yoco_eval", "report/templates"),
        autoescape=select_autoescape(
            enabled_extensions=("html", "html.j2", "xml"), default_for_string=True, default=True
        ),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(fmt.FILTERS)
    env.filters["json_script"] = json_script
    env.globals["asset"] = _asset
    env.globals["cell_key"] = cell_key
    env.globals["version"] = yoco_eval.__version__
    return env


def _asset(name: str) -> Markup:
    """A static CSS/JS file from the templates folder, inlined verbatim (it is not a template)."""
    source, _, _ = ENV.loader.get_source(ENV, name)  # type: ignore[union-attr]
    return Markup(source)


ENV = _make_env()


def render_template(name: str, **context: Any) -> str:
    return ENV.get_template(name).render(**context)


def _write(path: Path, text: str) -> Path:
    """Write atomically, so a browser reloading during a render never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def rel_href(target: Path, from_dir: Path) -> str:
    """Relative URL from a page in ``from_dir`` to ``target``, with each path segment percent-encoded."""
    rel = os.path.relpath(Path(target).resolve(), Path(from_dir).resolve())
    return "/".join(quote(part) for part in Path(rel).as_posix().split("/"))


def effective(run: NeedleRun, table) -> EffectiveLength | None:
    """The run's effective context length (default threshold), or None without lengths or with random weights."""
    if not table.lengths or random_weights(run):
        return None
    return effective_length(table.lengths, table.by_length)


def eff_marker(view, table, eff: EffectiveLength | None) -> dict[str, Any] | None:
    """Where the heatmap draws its effective-length line: the right edge of that length's column."""
    if view is None or eff is None or eff.length is None:
        return None
    j = table.lengths.index(eff.length)
    return {"x": round(view.left + (j + 1) * view.cell_w, 2), "label": "effective " + eff.label(), "tip": eff.explain()}


@dataclass
class Rendered:
    path: Path
    problems: list[Problem] = field(default_factory=list)


def _run_context(run: NeedleRun, out: Path, index: Path | None, generated_at: str | None) -> dict[str, Any]:
    table = run_table(run)
    failed = failed_rows(run)
    by_len, by_depth = accuracy_charts([(run.name, table)])
    view = heatmap_view(table)
    eff = effective(run, table)
    costs = length_costs(run, table, eff)
    return dict(
        run=run,
        table=table,
        heatmap=view,
        eff=eff,
        costs=costs,
        mem_note=memory_note(costs),
        marks=MARKS,
        marker=eff_marker(view, table, eff),
        speed=random_weights(run),
        by_length=by_len,
        by_depth=by_depth,
        meta=metadata_rows(run),
        subtitle=run_subtitle(run),
        failed=failed[:MAX_ERROR_ROWS],
        n_failed=len(failed),
        drill=drill_data(run),
        problems=run.problems,
        index_href=rel_href(index, out.parent) if index else None,
        generated_at=generated_at,
    )


def _render_run(
    run_dir: Path,
    out: Path | None = None,
    index: Path | None = None,
    generated_at: str | None = None,
    base: Path | None = None,
) -> Rendered:
    run = load_run(run_dir, base)
    out = Path(out) if out else Path(run_dir) / RUN_PAGE
    html = render_template("run.html.j2", **_run_context(run, out, index, generated_at))
    return Rendered(_write(out, html), run.problems)


def render_run(run_dir: Path | str, out: Path | str | None = None, *, generated_at: str | None = None) -> Path:
    """Render one needle run folder to a self-contained HTML report.

    Args:
        run_dir: folder with ``run.json`` and ``results.jsonl`` (and/or ``results.rank{r}.jsonl`` shards).
        out: output file; default ``<run_dir>/report.html``.
        generated_at: text shown as the render time; omitted by default so output is deterministic.

    Returns:
        The written file. Bad input never raises: problems are listed at the top of the page.
    """
    return _render_run(Path(run_dir), Path(out) if out else None, generated_at=generated_at).path


def _render_compare(
    run_a: Path, run_b: Path, out: Path, generated_at: str | None = None, index: Path | None = None
) -> Rendered:
    a, b = load_run(run_a, Path(run_a).parent), load_run(run_b, Path(run_b).parent)
    ta, tb = run_table(a), run_table(b)
    diff = diff_heatmaps(ta, tb)
    ha, hb = heatmap_view(ta, "ha", compact=True), heatmap_view(tb, "hb", compact=True)
    ea, eb = effective(a, ta), effective(b, tb)
    ca, cb = length_costs(a, ta, ea), length_costs(b, tb, eb)
    by_len, by_depth = accuracy_charts([(f"A: {a.name}", ta), (f"B: {b.name}", tb)])
    counts = {"better": 0, "worse": 0, "same": 0}
    for row in diff.cells:
        for c in row:
            if c.delta is not None:
                counts["better" if c.delta > 1e-9 else "worse" if c.delta < -1e-9 else "same"] += 1
    # Links to each run's own page; a comparison never renders (or rewrites) another folder's page.
    pages = [rel_href(r.dir / RUN_PAGE, out.parent) for r in (a, b)]
    ma, mb = metadata_rows(a), metadata_rows(b)
    side = [(sa[0], [(la, va, vb) for (la, va), (_, vb) in zip(sa[1], sb[1])]) for sa, sb in zip(ma, mb)]
    problems = [Problem(f"A: {p.path}", p.line, p.message, p.fix) for p in a.problems] + [
        Problem(f"B: {p.path}", p.line, p.message, p.fix) for p in b.problems
    ]
    html = render_template(
        "compare.html.j2",
        a=a,
        b=b,
        ta=ta,
        tb=tb,
        ha=ha,
        hb=hb,
        ea=ea,
        eb=eb,
        cost_rows=compare_costs(ca, cb),
        mem_note=memory_note(ca + cb),
        marks=MARKS,
        ma=eff_marker(ha, ta, ea),
        mb=eff_marker(hb, tb, eb),
        hd=diff_view(diff),
        diff=diff,
        counts=counts,
        pages=pages,
        by_length=by_len,
        by_depth=by_depth,
        side=side,
        problems=problems,
        index_href=rel_href(index, out.parent) if index else None,
        generated_at=generated_at,
    )
    return Rendered(_write(out, html), problems)


def render_compare(run_a: Path | str, run_b: Path | str, out: Path | str, *, generated_at: str | None = None) -> Path:
    """Render a side-by-side comparison of two needle runs with a difference heatmap (B − A) to ``out``."""
    return _render_compare(Path(run_a), Path(run_b), Path(out), generated_at).path


def compare_path(root: Path, run_a: Path, run_b: Path) -> Path:
    """Where ``yoco-eval report ROOT --compare A B`` writes its page."""

    def slug(p: Path) -> str:
        return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in Path(p).resolve().name)

    return Path(root) / COMPARE_DIR / f"{slug(run_a)}__vs__{slug(run_b)}.html"


def _render_lm_eval(
    paths: Iterable[Path],
    out: Path,
    base: Path | None = None,
    generated_at: str | None = None,
    index: Path | None = None,
) -> Rendered:
    runs: list[LmEvalRun] = [load_lm_eval(p, base if base else Path(p).parent) for p in paths]
    problems = [p for r in runs for p in r.problems]
    html = render_template(
        "lm_eval.html.j2",
        runs=runs,
        rows=lm_eval_table(runs),
        problems=problems,
        index_href=rel_href(index, out.parent) if index else None,
        generated_at=generated_at,
    )
    return Rendered(_write(out, html), problems)


def render_lm_eval(
    results_json_paths: Iterable[Path | str], out: Path | str, *, generated_at: str | None = None
) -> Path:
    """Render lm-eval results files as one task table, one column per file, to ``out``."""
    return _render_lm_eval([Path(p) for p in results_json_paths], Path(out), generated_at=generated_at).path


def _render_profile(
    path: Path, out: Path, base: Path | None = None, generated_at: str | None = None, index: Path | None = None
) -> Rendered:
    prof = load_profile(path, base if base else path.parent)
    html = render_template(
        "profile.html.j2",
        prof=prof,
        charts=profile_charts(prof),
        problems=prof.problems,
        index_href=rel_href(index, out.parent) if index else None,
        generated_at=generated_at,
    )
    return Rendered(_write(out, html), prof.problems)


def render_profile(profile_json: Path | str, out: Path | str, *, generated_at: str | None = None) -> Path:
    """Render a ``yoco-eval/profile/1`` JSON as charts of memory, prefill, throughput and decode vs length."""
    return _render_profile(Path(profile_json), Path(out), generated_at=generated_at).path


def score_stops() -> dict[str, Any]:
    return {"score": list(SCORE_STOPS), "diff": list(DIFF_STOPS)}
