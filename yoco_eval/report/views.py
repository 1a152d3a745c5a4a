"""View models for needle-run pages: heatmap geometry, charts, metadata rows and drill-down data.

Everything here is plain data computed from a :class:`~yoco_eval.report.load.NeedleRun`; the templates only
lay it out. Nothing here reads files or knows about HTML escaping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from yoco_eval.report import fmt
from yoco_eval.report.charts import LineChart, line_chart
from yoco_eval.report.heatmap import (
    DIFF_STOPS,
    SCORE_STOPS,
    DiffTable,
    HeatmapTable,
    Tally,
    build_heatmap,
    depth_key,
    diff_colour,
    score_colour,
)
from yoco_eval.report.load import CellResult, NeedleRun

#: Prompt excerpts keep EXCERPT_MIN..EXCERPT_MAX characters on each side of the needle, within a page budget.
EXCERPT_MIN, EXCERPT_MAX, EXCERPT_BUDGET = 160, 800, 1_600_000
#: Model outputs longer than this are cut in the page.
OUTPUT_CHARS = 4000
#: Height of the band above a score heatmap with the mean-per-length line.
BAND_H = 64.0
#: At most this many failed trials are listed in the page's error table (all stay in the drill-down).
MAX_ERROR_ROWS = 200


def cell_key(length: int, depth: float) -> str:
    """Key of one heatmap cell (all trials at one length and depth), used in URLs (#cell=KEY) and the data."""
    return f"L{length}_D{depth_key(depth):g}"


@dataclass(frozen=True)
class Square:
    x: float
    y: float
    fill: str | None  # None → state decides (hatched error / empty missing)
    label: str
    state: str  # ok | partial | error | missing
    tip: str
    key: str  # cell key, "" for marginal squares


@dataclass(frozen=True)
class Label:
    pos: float
    text: str


@dataclass(frozen=True)
class HeatmapView:
    """Geometry of one heatmap SVG (score or difference)."""

    uid: str  # prefix for SVG ids, unique within a page
    width: float
    height: float
    left: float
    top: float
    cell_w: float
    cell_h: float
    grid_w: float
    grid_h: float
    font: int
    cols: tuple[Label, ...]
    rows: tuple[Label, ...]
    squares: tuple[Square, ...]
    col_means: tuple[Square, ...]  # the "mean" row under the grid
    row_means: tuple[Square, ...]  # the "mean" column right of the grid
    mean_y: float
    mean_x: float
    band: float  # height of the band above the grid that holds the mean-per-length line (0: none)
    overlay: str  # SVG path of the per-length mean (NeedleBench's line, drawn in its own band), "" when not drawn
    overlay_points: tuple[tuple[float, float, str], ...]  # x, y, tooltip
    legend_x: float
    legend_stops: tuple[tuple[int, str], ...]  # (offset %, colour), top to bottom
    legend_ticks: tuple[Label, ...]
    legend_title: str
    linked: bool  # squares are links to the drill-down


def _tip(where: str, t: Tally) -> str:
    if t.state == "missing":
        return f"{where}: not run"
    if t.state == "error":
        return f"{where}: all {t.n_error} trial(s) failed"
    errs = f", {t.n_error} failed (excluded)" if t.n_error else ""
    return f"{where}: mean {fmt.pct(t.mean, 1)}% over {t.n_ok} trial(s){errs}"


def _layout(n_cols: int, n_rows: int, compact: bool) -> tuple[float, float, int]:
    cell_w = min(88.0, max(34.0, 880.0 / max(1, n_cols)))
    cell_h = min(40.0, max(22.0, 560.0 / max(1, n_rows)))
    if compact:
        cell_w, cell_h = min(cell_w, 44.0), min(cell_h, 24.0)
    return round(cell_w, 2), round(cell_h, 2), 11 if cell_w >= 40 else 10


def _grid_view(
    uid: str,
    lengths: tuple[int, ...],
    depths: tuple[float, ...],
    cells: list[list[tuple[Tally, str | None, str]]],  # per cell: tally, fill, label
    col_means: list[tuple[Tally, str | None, str]],
    row_means: list[tuple[Tally, str | None, str]],
    legend: tuple[tuple[str, ...], list[tuple[float, str]], str],
    overlay: list[float | None] | None,
    linked: bool,
    compact: bool = False,
) -> HeatmapView:
    cell_w, cell_h, font = _layout(len(lengths), len(depths), compact)
    band = BAND_H if overlay is not None else 0.0
    left, top = 58.0, 10.0 + band
    grid_w, grid_h = cell_w * len(lengths), cell_h * len(depths)
    squares = []
    for i, d in enumerate(depths):
        for j, length in enumerate(lengths):
            t, fill, label = cells[i][j]
            squares.append(
                Square(
                    round(left + j * cell_w, 2),
                    round(top + i * cell_h, 2),
                    fill,
                    label,
                    t.state,
                    _tip(f"{length:,} tokens, depth {fmt.depth(d)}%", t),
                    cell_key(length, d),
                )
            )
    mean_y = round(top + grid_h + 6, 2)
    cm = tuple(
        Square(round(left + j * cell_w, 2), mean_y, f, lab, t.state, _tip(f"{lengths[j]:,} tokens, all depths", t), "")
        for j, (t, f, lab) in enumerate(col_means)
    )
    mean_x = round(left + grid_w + 6, 2)
    rm = tuple(
        Square(
            mean_x,
            round(top + i * cell_h, 2),
            f,
            lab,
            t.state,
            _tip(f"depth {fmt.depth(depths[i])}%, all lengths", t),
            "",
        )
        for i, (t, f, lab) in enumerate(row_means)
    )
    path, pts = "", []
    if overlay is not None:
        pen = False
        parts = []
        for j, m in enumerate(overlay):
            if m is None:
                pen = False
                continue
            x, y = round(left + (j + 0.5) * cell_w, 2), round(14 + (1 - min(max(m, 0), 1)) * (band - 22), 2)
            parts.append(f"{'L' if pen else 'M'}{x},{y}")
            pts.append((x, y, f"{fmt.length(lengths[j])}: mean {fmt.pct(m, 1)}%"))
            pen = True
        path = " ".join(parts)
    stops, ticks, title = legend
    legend_x = round(mean_x + cell_w + 26, 2)
    return HeatmapView(
        uid=uid,
        width=round(legend_x + 62, 2),
        height=round(mean_y + cell_h + 44, 2),
        left=left,
        top=top,
        cell_w=cell_w,
        cell_h=cell_h,
        grid_w=round(grid_w, 2),
        grid_h=round(grid_h, 2),
        font=font,
        cols=tuple(Label(round(left + (j + 0.5) * cell_w, 2), t) for j, t in enumerate(fmt.length_labels(lengths))),
        rows=tuple(Label(round(top + (i + 0.5) * cell_h, 2), fmt.depth(d) + "%") for i, d in enumerate(depths)),
        squares=tuple(squares),
        col_means=cm,
        row_means=rm,
        mean_y=mean_y,
        mean_x=mean_x,
        band=band,
        overlay=path,
        overlay_points=tuple(pts),
        legend_x=legend_x,
        legend_stops=tuple((round(100 * k / (len(stops) - 1)), c) for k, c in enumerate(reversed(stops))),
        legend_ticks=tuple(Label(round(top + (1 - f) * grid_h, 2), lab) for f, lab in ticks),
        legend_title=title,
        linked=linked,
    )


def _score_item(t: Tally) -> tuple[Tally, str | None, str]:
    if t.mean is None:
        return t, None, "ERR" if t.state == "error" else "·"
    return t, score_colour(t.mean), fmt.pct(t.mean)


SCORE_LEGEND = (SCORE_STOPS, [(0, "0"), (0.5, "50"), (1, "100")], "score %")
DIFF_LEGEND = (DIFF_STOPS, [(0, "−100"), (0.5, "0"), (1, "+100")], "B − A")


def heatmap_view(table: HeatmapTable, uid: str = "hm", linked: bool = True, compact: bool = False) -> HeatmapView:
    """Score heatmap with marginal means and the mean-per-length line."""
    cells = [[_score_item(c.tally) for c in row] for row in table.cells]
    return _grid_view(
        uid,
        table.lengths,
        table.depths,
        cells,
        [_score_item(t) for t in table.by_length],
        [_score_item(t) for t in table.by_depth],
        SCORE_LEGEND,
        [t.mean for t in table.by_length],
        linked,
        compact,
    )


def diff_view(diff: DiffTable, uid: str = "diff") -> HeatmapView:
    """Difference heatmap (B − A, percentage points); cells without a score on both sides are hatched."""
    cells = []
    for row in diff.cells:
        line = []
        for c in row:
            t = Tally(c.delta, min(c.a.n_ok, c.b.n_ok), c.a.n_error + c.b.n_error)
            if c.delta is None:
                state = "missing" if c.a.n == 0 or c.b.n == 0 else "error"
                line.append(
                    (Tally(None, 0, 0 if state == "missing" else 1), None, "·" if state == "missing" else "n/a")
                )
            else:
                line.append((t, diff_colour(c.delta), fmt.signed_pct(c.delta)))
        cells.append(line)

    def margin(groups: list[list[float]]) -> list[tuple[Tally, str | None, str]]:
        out = []
        for g in groups:
            if g:
                m = sum(g) / len(g)
                out.append((Tally(m, len(g), 0), diff_colour(m), fmt.signed_pct(m)))
            else:
                out.append((Tally(None, 0, 0), None, "·"))
        return out

    col = [[c.delta for c in col_cells if c.delta is not None] for col_cells in zip(*diff.cells)]
    row = [[c.delta for c in r if c.delta is not None] for r in diff.cells]
    view = _grid_view(uid, diff.lengths, diff.depths, cells, margin(col), margin(row), DIFF_LEGEND, None, False)
    fix = tuple(_diff_tip(s, c) for s, c in zip(view.squares, (c for r in diff.cells for c in r)))
    return HeatmapView(**{**view.__dict__, "squares": fix})


def _diff_tip(s: Square, c) -> Square:
    where = f"{c.length:,} tokens, depth {fmt.depth(c.depth)}%"
    a, b = fmt.pct(c.a.mean, 1), fmt.pct(c.b.mean, 1)
    tip = f"{where}: A {a}%, B {b}%, B − A {fmt.signed_pct(c.delta)} points"
    return Square(s.x, s.y, s.fill, s.label, s.state, tip, s.key)


@dataclass(frozen=True)
class MiniHeatmap:
    width: float
    height: float
    cw: float
    ch: float
    rects: tuple[tuple[float, float, str], ...]  # x, y, fill ("" → error/missing drawn in grey)


def mini_view(table: HeatmapTable, width: float = 220, height: float = 110) -> MiniHeatmap:
    nc, nr = max(1, len(table.lengths)), max(1, len(table.depths))
    cw, ch = round(width / nc, 3), round(height / nr, 3)
    rects = []
    for i, row in enumerate(table.cells):
        for j, c in enumerate(row):
            t = c.tally
            fill = score_colour(t.mean) if t.mean is not None else ("#6B6B6B" if t.state == "error" else "#E4E4E4")
            rects.append((round(j * cw, 3), round(i * ch, 3), fill))
    return MiniHeatmap(width, height, cw, ch, tuple(rects))


def accuracy_charts(tables: list[tuple[str, HeatmapTable]]) -> tuple[LineChart, LineChart]:
    """Mean score by length (log axis) and by depth, one series per table; failed-only points show as ✕."""

    def pts(keys, tallies, label):
        out = []
        for k, t in zip(keys, tallies):
            if t.n == 0:
                continue
            tip = f"{label(k)}: " + (
                f"{fmt.pct(t.mean, 1)}% ({t.n_ok} ok, {t.n_error} failed)"
                if t.mean is not None
                else f"all {t.n_error} failed"
            )
            out.append((k, None if t.mean is None else t.mean * 100, tip))
        return out

    all_lengths = sorted({n for _, t in tables for n in t.lengths})
    shown = dict(zip(all_lengths, fmt.length_labels(all_lengths)))
    by_len = line_chart(
        "Accuracy by context length",
        [(n, pts(t.lengths, t.by_length, lambda v: f"{v:,} tokens")) for n, t in tables],
        x_label="context length (tokens)",
        y_label="mean score %",
        x_format=lambda v: shown.get(int(v), fmt.length(int(v))),
        y_format=lambda v: f"{v:.0f}",
        x_log=True,
        y_max=100,
    )
    by_depth = line_chart(
        "Accuracy by needle depth",
        [(n, pts(t.depths, t.by_depth, lambda v: f"depth {fmt.depth(v)}%")) for n, t in tables],
        x_label="depth %",
        y_label="mean score %",
        x_format=lambda v: fmt.depth(v),
        y_format=lambda v: f"{v:.0f}",
        y_max=100,
    )
    return by_len, by_depth


def _when(ts: str) -> datetime | None:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None
    except ValueError:
        return None


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def run_subtitle(run: NeedleRun) -> str:
    """One line under the title: model · haystack · variant · hardware · created, skipping what is unknown."""
    g = run.get
    parts = [
        g("model.name") and str(g("model.name")),
        g("haystack.name") and f"haystack {g('haystack.name')}",
        g("variant.name") and str(g("variant.name")),
        g("hardware.name") and str(g("hardware.name")),
        g("created_utc") and f"created {g('created_utc')}",
    ]
    return " · ".join(p for p in parts if p) or "no run.json metadata"


def metadata_rows(run: NeedleRun) -> list[tuple[str, list[tuple[str, str]]]]:
    """Metadata grouped in sections of (label, text) pairs; anything missing reads "—"."""
    g, t = run.get, fmt.text
    cells = run.cells
    seeds = sorted({c.seed for c in cells if c.seed is not None})
    stamps = [w for w in (_when(c.timestamp_utc) for c in cells) if w is not None]
    try:
        span = (max(stamps) - min(stamps)).total_seconds() if len(stamps) > 1 else None
    except TypeError:  # naive and aware timestamps mixed
        span = None
    durations = [c.duration_s for c in cells if c.duration_s is not None]
    prefills = [c.prefill_s for c in cells if c.prefill_s is not None]
    tps = [c.tokens_per_s for c in cells if c.tokens_per_s is not None]
    mems = [c.peak_mem_bytes for c in cells if c.peak_mem_bytes is not None]
    variant = g("variant")
    params = {k: v for k, v in variant.items() if k != "name"} if isinstance(variant, dict) else {}
    passes = g("haystack.passes")
    repeated = g("haystack.repeated")
    rep = t(repeated) + (f" ({passes:g} passes)" if isinstance(passes, (int, float)) and repeated else "")
    lengths, depths = run.grid_lengths, run.grid_depths
    return [
        (
            "Model",
            [
                ("name", t(g("model.name"))),
                ("kind", t(g("model.kind"))),
                ("checkpoint", t(g("model.checkpoint"))),
                ("checkpoint sha256", t(g("model.checkpoint_sha256"))),
                ("tokenizer", t(g("model.tokenizer"))),
            ],
        ),
        (
            "Haystack",
            [
                ("name", t(g("haystack.name"))),
                ("source", t(g("haystack.source"))),
                ("tokens", t(g("haystack.n_tokens"))),
                ("repeated", rep),
            ],
        ),
        (
            "Task",
            [
                ("variant", t(g("variant.name"))),
                ("variant parameters", t(params)),
                ("metric", t(sorted({c.metric for c in cells if c.metric}))),
                ("max new tokens", t(g("max_new_tokens"))),
                ("tolerance (tokens)", t(g("tolerance_tokens"))),
            ],
        ),
        (
            "Grid",
            [
                ("lengths", ", ".join(fmt.length(x) for x in lengths) or "—"),
                ("depths %", ", ".join(fmt.depth(x) for x in depths) or "—"),
                ("trials per cell", t(g("grid.trials"))),
                ("grid seed", t(g("grid.seed"))),
                ("trial seeds", f"{len(seeds):,} distinct, {seeds[0]}…{seeds[-1]}" if seeds else "—"),
            ],
        ),
        (
            "Environment",
            [
                ("hardware", t(g("hardware.name"))),
                ("device", t(g("hardware.device"))),
                ("git commit", t(g("git_commit"))),
                ("yoco-eval", t(g("yoco_eval_version"))),
                ("command", t(g("command"))),
                ("created (UTC)", t(g("created_utc"))),
            ],
        ),
        (
            "Cost",
            [
                ("compute time (sum)", fmt.seconds(sum(durations)) if durations else "—"),
                ("wall span (first→last row)", fmt.seconds(span)),
                ("mean time per trial", fmt.seconds(_mean(durations))),
                ("mean prefill", fmt.seconds(_mean(prefills))),
                ("mean tokens/s", fmt.num(_mean(tps), 1)),
                ("peak memory (max)", fmt.bytes_(max(mems)) if mems else "—"),
            ],
        ),
        ("Files", [("read", t(run.files))]),
    ]


def excerpt_chars(n_trials: int) -> int:
    """Characters kept on each side of a needle: generous for small runs, tighter for big ones.

    The page budgets about :data:`EXCERPT_BUDGET` characters for all excerpts together; the full text stays in
    ``results.jsonl``.
    """
    return int(min(EXCERPT_MAX, max(EXCERPT_MIN, EXCERPT_BUDGET / max(1, n_trials) / 2)))


class _Strings:
    """A table of repeated strings (question, metric, error, timestamp): each is stored once, trials hold indices."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, s: str | None) -> int | None:
        if s is None:
            return None
        if s not in self._index:
            self._index[s] = len(self.items)
            self.items.append(s)
        return self._index[s]


def _trial_data(c: CellResult, strings: _Strings, cut: int) -> dict[str, Any]:
    out = c.output
    if out is not None and len(out) > OUTPUT_CHARS:
        out = out[:OUTPUT_CHARS] + f"… [{len(c.output) - OUTPUT_CHARS:,} more characters in results]"
    texts = [n.text for n in c.needles]
    return {
        "trial": c.trial,
        "cell": c.cell,
        "seed": None if c.seed is None else str(c.seed),  # seeds may exceed 2**53, JavaScript's exact integers
        "status": c.status,
        "error": strings(c.error),
        "score": c.score,
        "metric": strings(c.metric),
        "prompt_tokens": c.prompt_tokens,
        "question": strings(c.question),
        "expected": list(c.expected),
        "output": out,
        "duration": fmt.seconds(c.duration_s),
        "prefill": fmt.seconds(c.prefill_s),
        "tps": fmt.num(c.tokens_per_s, 1),
        "mem": fmt.bytes_(c.peak_mem_bytes),
        "time": strings(c.timestamp_utc),
        "rank": c.rank,
        "source": c.source,
        "needles": [[n.key, n.value, n.text, n.token_position, n.depth_actual, n.is_target] for n in c.needles],
        # the needle inside an excerpt is usually one of the needle texts: then only its index is stored
        "excerpts": [
            [
                x.token_position,
                x.before if len(x.before) <= cut else "…" + x.before[-cut:],
                texts.index(x.needle) if x.needle in texts else x.needle,
                x.after if len(x.after) <= cut else x.after[:cut] + "…",
            ]
            for x in c.prompt_excerpts
        ],
    }


def drill_data(run: NeedleRun) -> dict[str, Any]:
    """Per-cell trial details for the page's drill-down panel.

    Returns:
        ``{"strings": [...], "excerpt_chars": int, "cells": {key: {"length", "depth", "trials": [...]}}}``;
        ``error``, ``metric``, ``question`` and ``time`` of a trial are indices into ``strings``, and an
        excerpt's needle is an index into the trial's ``needles`` when it is one of them.
    """
    strings = _Strings()
    cut = excerpt_chars(len(run.cells))
    cells: dict[str, dict[str, Any]] = {}
    for c in run.cells:
        key = cell_key(c.context_length, c.depth_percent)
        entry = cells.setdefault(key, {"length": c.context_length, "depth": c.depth_percent, "trials": []})
        entry["trials"].append(_trial_data(c, strings, cut))
    return {"strings": strings.items, "excerpt_chars": cut, "cells": cells}


def run_table(run: NeedleRun) -> HeatmapTable:
    return build_heatmap(run.cells, run.grid_lengths, run.grid_depths)


def failed_rows(run: NeedleRun) -> list[CellResult]:
    return [c for c in run.cells if not c.ok]
