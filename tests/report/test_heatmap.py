"""The pure data step: rows → HeatmapTable / DiffTable, and the colour scales."""

from __future__ import annotations

import pytest

from yoco_eval.report.heatmap import (
    DIFF_STOPS,
    SCORE_STOPS,
    build_heatmap,
    diff_colour,
    diff_heatmaps,
    interpolate,
    score_colour,
)
from yoco_eval.report.load import CellResult, load_run
from yoco_eval.report.views import heatmap_view


def _c(length, depth, trial, score=None, status="ok"):
    return CellResult(
        cell=f"L{length}_D{depth}_T{trial}",
        context_length=length,
        depth_percent=depth,
        trial=trial,
        status=status,
        error=None if status == "ok" else "boom",
        score=score,
    )


def test_means_counts_and_states():
    rows = [
        _c(1024, 0, 0, 1.0),
        _c(1024, 0, 1, 0.0),  # ok: mean 0.5
        _c(1024, 50, 0, 1.0),
        _c(1024, 50, 1, status="error"),  # partial: mean 1.0, one failure
        _c(2048, 0, 0, status="error"),
        _c(2048, 0, 1, status="error"),  # all failed
    ]
    t = build_heatmap(rows, lengths=[1024, 2048, 4096], depths=[0, 50])
    assert t.lengths == (1024, 2048, 4096) and t.depths == (0.0, 50.0)
    states = [[c.tally.state for c in row] for row in t.cells]
    assert states == [["ok", "error", "missing"], ["partial", "missing", "missing"]]
    assert t.cell(1024, 0).tally.mean == 0.5
    partial = t.cell(1024, 50).tally
    assert (partial.mean, partial.n_ok, partial.n_error) == (1.0, 1, 1)
    failed = t.cell(2048, 0)
    assert failed.tally.mean is None and failed.errors == ("boom",)  # never a zero
    assert [x.mean for x in t.by_length] == [pytest.approx(2 / 3), None, None]
    assert [(x.n_ok, x.n_error) for x in t.by_length] == [(3, 1), (0, 2), (0, 0)]
    assert t.overall.mean == pytest.approx(2 / 3) and t.overall.n_error == 3


def test_depths_that_differ_in_float_noise_share_a_row():
    t = build_heatmap([_c(1024, 33.3333333, 0, 1.0), _c(1024, 33.33333334, 1, 0.0)])
    assert len(t.depths) == 1 and t.cells[0][0].tally.n == 2


def test_failed_cells_render_as_errors_not_zeros(root):
    view = heatmap_view(build_heatmap(load_run(root / "runs" / "alpha").cells))
    sq = {s.key: s for s in view.squares}
    assert (sq["L16384_D100"].state, sq["L16384_D100"].label, sq["L16384_D100"].fill) == ("error", "ERR", None)
    assert sq["L4096_D100"].state == "partial" and sq["L4096_D100"].label == "100"
    assert [s.label for s in view.col_means] == ["83", "100", "75"]  # 16K: 3 ok of 6, errors excluded


def test_diff_over_the_union_of_grids():
    a = build_heatmap([_c(1024, 0, 0, 1.0), _c(2048, 0, 0, 0.5), _c(4096, 0, 0, status="error")])
    b = build_heatmap([_c(1024, 0, 0, 0.25), _c(2048, 0, 0, 1.0), _c(4096, 0, 0, 1.0), _c(8192, 0, 0, 1.0)])
    d = diff_heatmaps(a, b)
    assert d.lengths == (1024, 2048, 4096, 8192)
    assert [c.delta for c in d.cells[0]] == [-0.75, 0.5, None, None]
    assert d.shared == 2 and d.mean_delta == pytest.approx(-0.125)


def test_colour_scales_hit_their_stops():
    assert SCORE_STOPS == ("#F0496E", "#EBB839", "#0CD79F")
    assert (score_colour(0), score_colour(0.5), score_colour(1)) == SCORE_STOPS
    assert score_colour(-3) == "#F0496E" and score_colour(7) == "#0CD79F"
    assert (diff_colour(-1), diff_colour(0), diff_colour(1)) == DIFF_STOPS
    assert interpolate(("#000000", "#FFFFFF"), 0.5) == "#808080"
