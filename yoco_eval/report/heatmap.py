"""The pure data step of a needle report: rows → :class:`HeatmapTable` (depth % × context length).

Rows of the table are depths (0 % at the top, as in gkamradt's and NeedleBench's plots), columns are context
lengths. Each cell keeps its mean score over the trials that produced one, together with the counts of ok
and failed trials: failed trials are excluded from every mean and never shown as zeros.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from yoco_eval.report.load import CellResult

#: The canonical needle-in-a-haystack scale (gkamradt, NeedleBench, EvalScope): red → amber → green.
SCORE_STOPS = ("#F0496E", "#EBB839", "#0CD79F")
#: Diverging scale for differences (B − A): worse → unchanged → better.
DIFF_STOPS = ("#F0496E", "#F2F2F2", "#0CD79F")


def depth_key(depth: float) -> float:
    """Depths are floats in the data; round them so 33.333333 and 33.3333333 share a row."""
    return round(float(depth), 6)


@dataclass(frozen=True)
class Tally:
    """Mean score over ok trials, with counts. ``mean`` is None when no trial produced a score."""

    mean: float | None
    n_ok: int
    n_error: int

    @property
    def n(self) -> int:
        return self.n_ok + self.n_error

    @property
    def state(self) -> str:
        """``"missing"`` (nothing ran), ``"error"`` (all failed), ``"partial"`` (some failed) or ``"ok"``."""
        if self.n == 0:
            return "missing"
        if self.n_ok == 0:
            return "error"
        return "partial" if self.n_error else "ok"


def tally(rows: Iterable[CellResult]) -> Tally:
    total, n_ok, n_err = 0.0, 0, 0
    for r in rows:
        if r.ok:
            total += r.score  # type: ignore[operator]
            n_ok += 1
        else:
            n_err += 1
    return Tally(total / n_ok if n_ok else None, n_ok, n_err)


@dataclass(frozen=True)
class HeatCell:
    length: int
    depth: float
    tally: Tally
    errors: tuple[str, ...]  # distinct error messages of the failed trials (first few)


@dataclass(frozen=True)
class HeatmapTable:
    """Depth × length table of mean scores.

    Attributes:
        lengths: column keys, ascending.
        depths: row keys, ascending (row 0 is depth 0 %).
        cells: ``cells[i][j]`` is depth ``depths[i]`` at length ``lengths[j]``.
        by_length: one tally per column (over all trials in it, not a mean of cell means).
        by_depth: one tally per row.
        overall: the tally of every trial.
    """

    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    cells: tuple[tuple[HeatCell, ...], ...]
    by_length: tuple[Tally, ...]
    by_depth: tuple[Tally, ...]
    overall: Tally

    def cell(self, length: int, depth: float) -> HeatCell | None:
        try:
            return self.cells[self.depths.index(depth_key(depth))][self.lengths.index(length)]
        except ValueError:
            return None


def build_heatmap(
    rows: Sequence[CellResult], lengths: Iterable[int] = (), depths: Iterable[float] = ()
) -> HeatmapTable:
    """Pivot rows into a :class:`HeatmapTable`.

    Args:
        rows: the run's rows (one per trial).
        lengths, depths: the planned grid (from ``run.json``); cells that never ran show as missing. Lengths
            and depths that appear only in the rows are added too.
    """
    ls = sorted({int(x) for x in lengths} | {r.context_length for r in rows})
    ds = sorted({depth_key(x) for x in depths} | {depth_key(r.depth_percent) for r in rows})
    groups: dict[tuple[int, float], list[CellResult]] = {}
    for r in rows:
        groups.setdefault((r.context_length, depth_key(r.depth_percent)), []).append(r)
    cells = []
    for d in ds:
        line = []
        for length in ls:
            g = groups.get((length, d), [])
            errors = tuple(dict.fromkeys(r.error or "" for r in g if not r.ok))[:3]
            line.append(HeatCell(length, d, tally(g), errors))
        cells.append(tuple(line))
    by_length = tuple(tally(r for r in rows if r.context_length == length) for length in ls)
    by_depth = tuple(tally(r for r in rows if depth_key(r.depth_percent) == d) for d in ds)
    return HeatmapTable(tuple(ls), tuple(ds), tuple(cells), by_length, by_depth, tally(rows))


@dataclass(frozen=True)
class DiffCell:
    length: int
    depth: float
    a: Tally
    b: Tally

    @property
    def delta(self) -> float | None:
        """B − A, or None when either side has no score (failed or not run)."""
        if self.a.mean is None or self.b.mean is None:
            return None
        return self.b.mean - self.a.mean


@dataclass(frozen=True)
class DiffTable:
    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    cells: tuple[tuple[DiffCell, ...], ...]
    shared: int  # cells with a score on both sides
    mean_delta: float | None  # mean of deltas over shared cells


def diff_heatmaps(a: HeatmapTable, b: HeatmapTable) -> DiffTable:
    """Cell-wise B − A over the union of both grids."""
    ls = sorted(set(a.lengths) | set(b.lengths))
    ds = sorted(set(a.depths) | set(b.depths))
    empty = Tally(None, 0, 0)
    cells, deltas = [], []
    for d in ds:
        line = []
        for length in ls:
            ca, cb = a.cell(length, d), b.cell(length, d)
            c = DiffCell(length, d, ca.tally if ca else empty, cb.tally if cb else empty)
            if c.delta is not None:
                deltas.append(c.delta)
            line.append(c)
        cells.append(tuple(line))
    mean = sum(deltas) / len(deltas) if deltas else None
    return DiffTable(tuple(ls), tuple(ds), tuple(cells), len(deltas), mean)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def interpolate(stops: Sequence[str], t: float) -> str:
    """Colour at ``t`` in [0, 1] on a piecewise-linear RGB scale through evenly spaced ``stops``."""
    t = min(1.0, max(0.0, t))
    seg = t * (len(stops) - 1)
    i = min(int(seg), len(stops) - 2)
    f = seg - i
    lo, hi = _rgb(stops[i]), _rgb(stops[i + 1])
    return "#" + "".join(f"{round(x + (y - x) * f):02X}" for x, y in zip(lo, hi))


def score_colour(score: float) -> str:
    """Fill for a mean score in [0, 1] (values outside are clamped)."""
    return interpolate(SCORE_STOPS, score)


def diff_colour(delta: float) -> str:
    """Fill for a difference in [-1, 1]."""
    return interpolate(DIFF_STOPS, (delta + 1.0) / 2.0)
