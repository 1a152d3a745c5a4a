"""Line-chart geometry for inline SVG: all coordinates are computed here, templates only draw them.

Used for accuracy by length / by depth on run and comparison pages, and for memory, prefill latency and
throughput against context length on profile pages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Series colours, chosen apart from the red/amber/green score scale.
PALETTE = ("#2F6BD9", "#E07B39", "#8A4FD0", "#17998A", "#C7366F", "#5C6B80", "#B58A00", "#2E9C3F")


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    tip: str


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    path: str  # SVG path data; breaks (M) at missing values
    points: tuple[Point, ...]
    failures: tuple[Point, ...]  # drawn as ✕ on the top edge (OOM, error)


@dataclass(frozen=True)
class LineChart:
    title: str
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    x_label: str
    y_label: str
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    series: tuple[Series, ...]
    empty: bool


#: One input point: (x, y or None when failed, tooltip text).
Datum = tuple[float, float | None, str]


def nice_axis(v: float, max_steps: int = 6) -> tuple[float, float]:
    """(top, step) of a y axis from 0 covering ``v`` in at most ``max_steps`` round steps (1, 2, 2.5, 5 × 10^k)."""
    if v <= 0:
        return 1.0, 0.25
    mag = 10 ** math.floor(math.log10(v / max_steps))
    for step in (m * mag for m in (1, 2, 2.5, 5, 10, 20)):
        n = math.ceil(v / step - 1e-9)
        if n <= max_steps:
            return round(n * step, 12), step
    raise AssertionError("unreachable: 20 × mag always covers v")


def line_chart(
    title: str,
    data: Sequence[tuple[str, Sequence[Datum]]],
    *,
    x_label: str,
    y_label: str,
    x_format: Callable[[float], str],
    y_format: Callable[[float], str],
    x_log: bool = False,
    y_max: float | None = None,
    width: int = 460,
    height: int = 260,
) -> LineChart:
    """Lay out a line chart.

    Args:
        data: ``[(series name, [(x, y | None, tip), ...]), ...]``; y None marks a failure at that x.
        x_log: log2 x axis (context lengths); ticks sit on the distinct x values, thinned to fit.
        y_max: fixed top of the y axis (e.g. 100 for percentages); otherwise a rounded-up data maximum.
    """
    left, top, right, bottom = 58.0, 28.0, width - 14.0, height - 44.0
    xs = sorted({d[0] for _, pts in data for d in pts if d[0] is not None and (d[0] > 0 or not x_log)})
    ys = [d[1] for _, pts in data for d in pts if d[1] is not None]
    if not xs:
        return LineChart(title, width, height, left, top, right, bottom, x_label, y_label, (), (), (), True)
    fx = (lambda v: math.log2(v)) if x_log else (lambda v: v)
    lo, hi = fx(xs[0]), fx(xs[-1])
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    top_y, y_step = (y_max, y_max / 4) if y_max is not None else nice_axis(max(ys) if ys else 1.0)

    def px(v: float) -> float:
        return round(left + (fx(v) - lo) / (hi - lo) * (right - left), 2)

    def py(v: float) -> float:
        return round(bottom - min(max(v, 0.0), top_y) / top_y * (bottom - top), 2)

    step = max(1, math.ceil(len(xs) / max(1, int((right - left) // 44))))
    x_ticks = tuple(Tick(px(v), x_format(v)) for i, v in enumerate(xs) if i % step == 0 or i == len(xs) - 1)
    if len(x_ticks) > 1 and x_ticks[-1].pos - x_ticks[-2].pos < 36:
        x_ticks = x_ticks[:-2] + x_ticks[-1:]
    n_steps = round(top_y / y_step)
    y_ticks = tuple(Tick(py(y_step * k), y_format(y_step * k)) for k in range(n_steps + 1))
    series = []
    for i, (name, pts) in enumerate(data):
        pts = sorted((d for d in pts if d[0] in xs), key=lambda d: d[0])
        path, pen_down, good, bad = [], False, [], []
        for x, y, tip in pts:
            if y is None:
                bad.append(Point(px(x), top - 8, tip))
                pen_down = False
                continue
            p = Point(px(x), py(y), tip)
            good.append(p)
            path.append(f"{'L' if pen_down else 'M'}{p.x},{p.y}")
            pen_down = True
        series.append(Series(name, PALETTE[i % len(PALETTE)], " ".join(path), tuple(good), tuple(bad)))
    return LineChart(
        title,
        width,
        height,
        left,
        top,
        right,
        bottom,
        x_label,
        y_label,
        x_ticks,
        y_ticks,
        tuple(series),
        not ys and not any(s.failures for s in series),
    )
